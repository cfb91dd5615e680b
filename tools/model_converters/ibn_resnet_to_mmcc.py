"""Convert an IBN-Net ResNet-50/101-IBN-a checkpoint for mmcc's IBNResNet.

    python tools/model_converters/ibn_resnet_to_mmcc.py \\
        resnet50_ibn_a-d9d0bb7b.pth checkpoints/resnet50_ibn_a_mmcc.pth \\
        --verify

SRC is a ``resnet50_ibn_a`` / ``resnet101_ibn_a`` checkpoint of the official
IBN-Net repository (https://github.com/XingangPan/IBN-Net): a bare state
dict (the v1.0 release files) or one nested under ``state_dict`` / ``model``
with ``module.`` prefixes (training checkpoints). BatchNorms lacking
``num_batches_tracked`` (checkpoints older than PyTorch 0.4.1) get it as 0;
``fc`` is dropped if present; any other missing or unknown key is an error
naming it.

DST gets ``{'state_dict': ..., 'meta': ...}`` with backbone-level keys (no
prefix), to be used as::

    backbone=dict(
        type='IBNResNet', depth=50, out_indices=(3, ),
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/resnet50_ibn_a_mmcc.pth'))

``--prefix backbone.`` instead writes keys of a whole ``ReIDModel``.

Self-contained: only torch and the standard library, plus mmcc for
``--verify`` (a strict load into ``IBNResNet`` and one forward pass).
"""
import argparse
import pickle
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional

import torch

StateDict = Dict[str, torch.Tensor]

# Blocks per stage (layer1..layer4), as in IBN-Net and mmpretrain's ResNet.
STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# IBN-a: the first norm of every block of these stages is an IBN.
IBN_STAGES = (1, 2, 3)
BN_PARAMS = ('weight', 'bias', 'running_mean', 'running_var')
BN_COUNTER = 'num_batches_tracked'
# IN is affine without running statistics (track_running_stats=False), so it
# has these keys only.
IN_PARAMS = ('weight', 'bias')
CLASSIFIER_KEYS = ('fc.weight', 'fc.bias')
VERIFY_INPUT_SHAPE = (2, 3, 256, 128)  # a re-ID batch


class CheckpointKeyError(ValueError):
    """The source state dict lacks keys or holds keys nobody expects."""


def extract_state_dict(checkpoint: dict) -> StateDict:
    """The tensors of a loaded checkpoint, unnested, without ``module.``."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f'expected a dict checkpoint, got {type(checkpoint)}')
    for nest in ('state_dict', 'model'):
        if isinstance(checkpoint.get(nest), dict):
            checkpoint = checkpoint[nest]
            break
    # DataParallel / DistributedDataParallel training checkpoints
    if checkpoint and all(k.startswith('module.') for k in checkpoint):
        checkpoint = {k[len('module.'):]: v for k, v in checkpoint.items()}
    return OrderedDict(checkpoint)


def _bn_keys(module: str) -> List[str]:
    """State-dict keys of a BatchNorm, without ``num_batches_tracked``."""
    return [f'{module}.{param}' for param in BN_PARAMS]


def source_keys(depth: int) -> List[str]:
    """Keys of IBN-Net's ``resnet{depth}_ibn_a`` backbone, without ``fc``
    and ``num_batches_tracked``, in network order."""
    keys = ['conv1.weight'] + _bn_keys('bn1')
    for stage, num_blocks in enumerate(STAGE_BLOCKS[depth], start=1):
        for block in range(num_blocks):
            prefix = f'layer{stage}.{block}'
            keys.append(f'{prefix}.conv1.weight')
            if stage in IBN_STAGES:
                keys += [f'{prefix}.bn1.IN.{param}' for param in IN_PARAMS]
                keys += _bn_keys(f'{prefix}.bn1.BN')
            else:
                keys += _bn_keys(f'{prefix}.bn1')
            for conv in (2, 3):
                keys.append(f'{prefix}.conv{conv}.weight')
                keys += _bn_keys(f'{prefix}.bn{conv}')
            if block == 0:
                keys.append(f'{prefix}.downsample.0.weight')
                keys += _bn_keys(f'{prefix}.downsample.1')
    return keys


def infer_depth(source: StateDict) -> int:
    """50 or 101, from the number of blocks of ``layer3``."""
    num_blocks = len(
        {key.split('.')[1]
         for key in source if key.startswith('layer3.')})
    for depth, stage_blocks in STAGE_BLOCKS.items():
        if stage_blocks[2] == num_blocks:
            return depth
    raise CheckpointKeyError(
        f'layer3 has {num_blocks} blocks; ResNet-IBN-a has ' +
        ' or '.join(f'{blocks[2]} (depth {depth})'
                    for depth, blocks in STAGE_BLOCKS.items()))


def _describe(keys: List[str], limit: int = 10) -> str:
    shown = ', '.join(keys[:limit])
    more = len(keys) - limit
    return shown + (f' ... and {more} more' if more > 0 else '')


def convert(source: StateDict,
            depth: Optional[int] = None,
            prefix: str = '') -> StateDict:
    """IBN-Net ``resnet{depth}_ibn_a`` keys -> mmcc ``IBNResNet`` keys.

    mmpretrain's ResNet names its modules as IBN-Net and torchvision do
    (``conv1``, ``bn1``, ``layerX.Y.bn1``..., ``downsample.0/1``: mmcv names
    a BN norm layer ``bn<postfix>``) and mmcc's IBN keeps the ``IN`` and
    ``BN`` children, so every kept key keeps its name: the conversion checks
    the key set, drops ``fc``, fills ``num_batches_tracked`` and prepends
    ``prefix``.

    Args:
        source (dict): IBN-Net state dict, already unnested (see
            :func:`extract_state_dict`).
        depth (int, optional): 50 or 101; inferred from the keys if None,
            checked against them otherwise.
        prefix (str): Prepended to every output key, e.g. ``'backbone.'``.

    Returns:
        dict: The backbone state dict, in network order.

    Raises:
        CheckpointKeyError: naming the missing and the unexpected keys.
    """
    if depth is None:
        depth = infer_depth(source)
    # a wrong explicit depth shows as missing or unexpected layer3 blocks
    expected = source_keys(depth)
    # running_var key -> num_batches_tracked key, one per BatchNorm
    counter_of = {
        key: key[:-len('running_var')] + BN_COUNTER
        for key in expected if key.endswith('.running_var')
    }
    missing = [key for key in expected if key not in source]
    known = set(expected) | set(counter_of.values()) | set(CLASSIFIER_KEYS)
    unexpected = sorted(key for key in source if key not in known)
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f'missing keys: {_describe(missing)}')
        if unexpected:
            problems.append(f'unexpected keys: {_describe(unexpected)}')
        raise CheckpointKeyError(
            f'not a ResNet-{depth}-IBN-a checkpoint of IBN-Net: ' +
            '; '.join(problems))

    converted = OrderedDict()
    for key in expected:
        converted[prefix + key] = source[key]
        counter = counter_of.get(key)
        if counter is not None:
            # what BatchNorm itself assumes for pre-0.4.1 state dicts
            converted[prefix + counter] = source.get(
                counter, torch.tensor(0, dtype=torch.long))
    return converted


def verify(converted: StateDict, depth: int, prefix: str = '') -> tuple:
    """Strictly load ``converted`` into ``IBNResNet(depth)`` and run it.

    Returns:
        tuple: The (B, 2048, H / 32, W / 32) shape of the last feature map
        for a :data:`VERIFY_INPUT_SHAPE` input.

    Raises:
        RuntimeError: if the keys or shapes do not match the model, or the
            output is not finite.
    """
    from mmcc.models.backbones import IBNResNet

    model = IBNResNet(depth, out_indices=(3, ))
    model.load_state_dict(
        {
            key[len(prefix):]: value
            for key, value in converted.items()
        },
        strict=True)
    model.eval()
    with torch.no_grad():
        (features, ) = model(
            torch.randn(
                VERIFY_INPUT_SHAPE,
                generator=torch.Generator().manual_seed(0)))
    if not torch.isfinite(features).all():
        raise RuntimeError('IBNResNet gives non-finite features')
    return tuple(features.shape)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an IBN-Net ResNet-IBN-a checkpoint to an mmcc '
        'IBNResNet checkpoint.')
    parser.add_argument('src', help='IBN-Net resnet{50,101}_ibn_a checkpoint')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument(
        '--depth',
        type=int,
        choices=sorted(STAGE_BLOCKS),
        help='checked against the keys; inferred by default')
    parser.add_argument(
        '--prefix',
        default='',
        help="prepended to the keys, e.g. 'backbone.' for a whole model; "
        'default: none, for a backbone-level init_cfg')
    parser.add_argument(
        '--verify',
        action='store_true',
        help='load the result strictly into mmcc IBNResNet and run it')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        # tensors only: never unpickle arbitrary objects from a download
        checkpoint = torch.load(
            args.src, map_location='cpu', weights_only=True)
        source = extract_state_dict(checkpoint)
        depth = args.depth or infer_depth(source)
        converted = convert(source, depth, args.prefix)
    except pickle.UnpicklingError as error:
        raise SystemExit(
            f'error: {args.src} holds more than tensors and plain '
            'containers, which weights_only loading refuses; re-save its '
            f'state_dict alone from a trusted environment ({error})')
    except (CheckpointKeyError, FileNotFoundError, TypeError) as error:
        raise SystemExit(f'error: {error}')
    meta = dict(
        converted_from=str(args.src),
        backbone=f"IBNResNet(depth={depth}, ibn='a')",
        key_prefix=args.prefix,
        converter='mmcc tools/model_converters/ibn_resnet_to_mmcc.py')
    dst = Path(args.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state_dict=converted, meta=meta), dst)
    print(f'{args.src} (ResNet-{depth}-IBN-a, {len(source)} keys) -> {dst} '
          f'({len(converted)} keys)')
    if args.verify:
        try:
            shape = verify(converted, depth, args.prefix)
        except RuntimeError as error:
            raise SystemExit(f'error: verification failed: {error}')
        print(f'OK: strict load into IBNResNet(depth={depth}); features '
              f'{shape} for an input {VERIFY_INPUT_SHAPE}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
