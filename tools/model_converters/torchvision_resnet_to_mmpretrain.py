"""Convert a torchvision ResNet-18/34/50/101/152 checkpoint for mmpretrain.

    python tools/model_converters/torchvision_resnet_to_mmpretrain.py \\
        resnet50-0676ba61.pth checkpoints/resnet50_mmpretrain.pth --verify

DST gets ``{'state_dict': ..., 'meta': ...}`` with backbone-level keys (no
prefix; ``fc`` dropped), to be used as::

    backbone=dict(
        type='mmpretrain.ResNet', depth=50, out_indices=(3, ),
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/resnet50_mmpretrain.pth'))

``--prefix backbone. --head-prefix head.`` instead writes a whole
mmpretrain ``ImageClassifier`` (``LinearClsHead`` with ``fc``) state dict.

Only torch and the standard library are needed to convert; ``--verify``
also imports torchvision and mmpretrain. Backbone key names coincide in
torchvision and mmpretrain, so conversion checks that the keys are exactly
those of a plain ResNet of that depth, adds ``--prefix`` and keeps or drops
``fc``. A source lacking ``num_batches_tracked`` buffers (saved before
PyTorch 0.4.1) gets them as 0; any other missing or unknown key is an error
naming the keys.
"""
import argparse
import sys
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

VERIFY_TOLERANCE = 1e-5
VERIFY_INPUT_SHAPE = (2, 3, 256, 128)  # a re-ID batch

# ----------------------------------------------------------- key renaming
# The same block opens both converters in this folder, so that each script
# stands alone; tests/test_checkpoint_convert.py checks that they agree.

StateDict = Dict[str, torch.Tensor]
# A (source key, destination key) list; destination None drops the key.
Renames = List[Tuple[str, Optional[str]]]
BN_KEYS = ('weight', 'bias', 'running_mean', 'running_var',
           'num_batches_tracked')


class CheckpointKeyError(ValueError):
    """The source state dict lacks keys or holds keys nobody expects."""


def extract_state_dict(checkpoint: dict) -> StateDict:
    """The tensors of a loaded checkpoint file.

    Accepts a bare state dict or one nested under ``'state_dict'`` (mmengine)
    or ``'model'`` (torchvision's training references); strips the
    ``module.`` prefix that ``DataParallel`` adds.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f'expected a dict checkpoint, got {type(checkpoint)}')
    for nest in ('state_dict', 'model'):
        if isinstance(checkpoint.get(nest), dict):
            checkpoint = checkpoint[nest]
            break
    if checkpoint and all(k.startswith('module.') for k in checkpoint):
        checkpoint = {k[len('module.'):]: v for k, v in checkpoint.items()}
    return OrderedDict(checkpoint)


def _conv_bn_keys(conv: str, bn: str) -> List[str]:
    """Keys of a bias-free conv followed by a BatchNorm."""
    return [f'{conv}.weight'] + [f'{bn}.{key}' for key in BN_KEYS]


def _apply_renames(state_dict: StateDict, renames: Renames,
                   what: str) -> StateDict:
    """Rename keys; the source must hold exactly the renamed keys.

    A missing ``num_batches_tracked`` buffer (checkpoints saved before
    PyTorch 0.4.1) becomes 0, as PyTorch's own BatchNorm loader does; any
    other missing or unknown key raises :class:`CheckpointKeyError`.
    """
    known = {src for src, _ in renames}
    mismatch = dict(
        missing=[
            src for src, _ in renames if src not in state_dict
            and not src.endswith('.num_batches_tracked')
        ],
        unexpected=[key for key in state_dict if key not in known])
    if any(mismatch.values()):
        raise CheckpointKeyError(f'{what}: ' + '; '.join(
            f'{kind} keys {_first_keys(keys)}'
            for kind, keys in mismatch.items() if keys))
    converted = OrderedDict()
    for src, dst in renames:
        if dst is None:
            continue
        if src in state_dict:
            converted[dst] = state_dict[src]
        else:  # a num_batches_tracked buffer older PyTorch did not save
            converted[dst] = torch.tensor(0, dtype=torch.long)
    return converted


def _first_keys(keys: List[str], shown: int = 8) -> str:
    more = f' (and {len(keys) - shown} more)' if len(keys) > shown else ''
    return ', '.join(keys[:shown]) + more


def _head_renames(state_dict: StateDict, src: str,
                  head_prefix: Optional[str]) -> Renames:
    """The classifier's linear layer ``src`` -> ``{head_prefix}fc``."""
    keys = [k for k in (f'{src}.weight', f'{src}.bias') if k in state_dict]
    return [(k, None if head_prefix is None else
             f'{head_prefix}fc.{k.rsplit(".", 1)[1]}') for k in keys]


def backbone_state_dict(state_dict: StateDict,
                        prefix: str = '',
                        head_prefix: Optional[str] = None) -> StateDict:
    """The backbone part of a converted state dict, ``prefix`` stripped."""
    return OrderedDict(
        (k[len(prefix):], v) for k, v in state_dict.items()
        if k.startswith(prefix)
        and not (head_prefix is not None and k.startswith(head_prefix)))


# ----------------------------------------------------------------- ResNet

# depth -> (block type, blocks per stage), as in torchvision and mmpretrain.
RESNET_ARCHS = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}


def infer_resnet_depth(state_dict: StateDict) -> int:
    """18/34/50/101/152, from the block type and the blocks per stage."""
    kind = 'bottleneck' if 'layer1.0.conv3.weight' in state_dict \
        else 'basic'
    blocks = []
    for stage in range(1, 5):
        # max index + 1, so that a hole shows up as missing keys later
        indices = [
            int(k.split('.')[1]) for k in state_dict
            if k.startswith(f'layer{stage}.') and k.split('.')[1].isdigit()
        ]
        blocks.append(max(indices) + 1 if indices else 0)
    for depth, arch in RESNET_ARCHS.items():
        if arch == (kind, tuple(blocks)):
            return depth
    raise CheckpointKeyError(
        f'not a torchvision ResNet-18/34/50/101/152 checkpoint: {kind} '
        f'blocks, {tuple(blocks)} per stage (from the layer1-4 keys)')


def _resnet_backbone_keys(depth: int) -> List[str]:
    """Backbone keys shared by torchvision's and mmpretrain's ResNet."""
    kind, stage_blocks = RESNET_ARCHS[depth]
    num_convs = 3 if kind == 'bottleneck' else 2
    keys = _conv_bn_keys('conv1', 'bn1')
    for stage, num_blocks in enumerate(stage_blocks, start=1):
        for block in range(num_blocks):
            name = f'layer{stage}.{block}'
            for i in range(1, num_convs + 1):
                keys += _conv_bn_keys(f'{name}.conv{i}', f'{name}.bn{i}')
            # the first block projects the shortcut when channels or stride
            # change: every stage but a basic-block stage 1
            if block == 0 and (stage > 1 or kind == 'bottleneck'):
                keys += _conv_bn_keys(f'{name}.downsample.0',
                                      f'{name}.downsample.1')
    return keys


def convert_torchvision_resnet(state_dict: StateDict,
                               depth: Optional[int] = None,
                               prefix: str = '',
                               head_prefix: Optional[str] = None) -> StateDict:
    """torchvision ResNet -> ``mmpretrain.ResNet(depth)`` keys.

    Backbone names coincide (``conv1``, ``bn1``, ``layerN.i.convK``,
    ``layerN.i.downsample.0/1``; both put the stride on the 3x3 conv), so
    this validates the keys, adds ``prefix`` and handles the ``fc`` head.

    Args:
        state_dict: A torchvision ``resnet18/34/50/101/152`` state dict,
            with or without ``fc.*``.
        depth: Checked against the keys; inferred when ``None``.
        prefix: Prepended to every backbone key, e.g. ``'backbone.'``.
        head_prefix: Where ``fc`` goes, e.g. ``'head.'`` -> ``head.fc.*``
            (an mmpretrain ``LinearClsHead``); ``None`` drops it.
    """
    inferred = infer_resnet_depth(state_dict)
    if depth is not None and depth != inferred:
        raise CheckpointKeyError(
            f'asked for ResNet-{depth}, but the keys are of ResNet-{inferred}')
    # ResNeXt and wide ResNets share the key names but not the shapes.
    conv = state_dict.get('layer1.0.conv2.weight')
    if conv is not None and tuple(conv.shape[:2]) != (64, 64):
        raise CheckpointKeyError(
            f'layer1.0.conv2.weight has shape {tuple(conv.shape)}, not '
            '(64, 64, 3, 3): a ResNeXt or wide ResNet, not a plain ResNet')
    renames = [(k, f'{prefix}{k}') for k in _resnet_backbone_keys(inferred)]
    renames += _head_renames(state_dict, 'fc', head_prefix)
    return _apply_renames(state_dict, renames,
                          f'torchvision ResNet-{inferred} checkpoint')


# -------------------------------------------------------------- command


def max_output_difference(source: dict,
                          converted_file: str,
                          depth: int,
                          prefix: str = '',
                          head_prefix=None,
                          seed: int = 0) -> float:
    """Max |torchvision - mmpretrain| last-stage feature map (eval mode).

    torchvision ``resnet{depth}`` up to ``layer4`` gets ``source`` (``fc``
    may be absent) and mmpretrain ``ResNet(depth, out_indices=(3, ))`` the
    backbone part of ``converted_file``, strictly.
    """
    import torchvision
    with warnings.catch_warnings():
        # mmcv-lite lacks compiled ops; mmpretrain warns about an unused one
        warnings.filterwarnings('ignore', message='Fail to import ``Multi')
        from mmpretrain.models import ResNet

    reference = getattr(torchvision.models, f'resnet{depth}')(weights=None)
    missing, unexpected = reference.load_state_dict(source, strict=False)
    if unexpected or set(missing) - {'fc.weight', 'fc.bias'}:
        raise CheckpointKeyError(
            f'torchvision resnet{depth} rejects the source: missing '
            f'{missing}, unexpected {unexpected}')
    reference.fc = torch.nn.Identity()
    reference.avgpool = torch.nn.Identity()
    converted = torch.load(
        converted_file, map_location='cpu', weights_only=True)['state_dict']
    model = ResNet(depth, out_indices=(3, ))
    model.load_state_dict(backbone_state_dict(converted, prefix, head_prefix))
    reference.eval()
    model.eval()
    inputs = torch.randn(
        VERIFY_INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        (actual, ) = model(inputs)
        # without avgpool and fc, torchvision flattens layer4's output
        expected = reference(inputs).view_as(actual)
    return (expected - actual).abs().max().item()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert a torchvision ResNet checkpoint to an '
        'mmpretrain ResNet checkpoint.')
    parser.add_argument('src', help='torchvision ResNet checkpoint')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument(
        '--depth',
        type=int,
        choices=(18, 34, 50, 101, 152),
        help='checked against the keys; inferred by default')
    parser.add_argument(
        '--prefix',
        default='',
        help="prepended to backbone keys, e.g. 'backbone.' for a whole "
        'model; default: none, for a backbone-level init_cfg')
    parser.add_argument(
        '--head-prefix',
        help="keep fc as '<HEAD_PREFIX>fc.*', e.g. 'head.' for an "
        'ImageClassifier; default: drop it')
    parser.add_argument(
        '--verify',
        action='store_true',
        help='compare torchvision and mmpretrain outputs after converting')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        checkpoint = torch.load(
            args.src, map_location='cpu', weights_only=True)
        source = extract_state_dict(checkpoint)
        converted = convert_torchvision_resnet(source, args.depth, args.prefix,
                                               args.head_prefix)
        depth = infer_resnet_depth(source)
    except (CheckpointKeyError, FileNotFoundError) as error:
        raise SystemExit(f'error: {error}')
    meta = dict(
        converted_from=str(args.src),
        backbone=f'mmpretrain.ResNet(depth={depth})',
        key_prefix=args.prefix,
        converter='mmcc tools/model_converters/'
        'torchvision_resnet_to_mmpretrain.py')
    dst = Path(args.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state_dict=converted, meta=meta), dst)
    print(f'{args.src} (ResNet-{depth}, {len(source)} keys) -> {dst} '
          f'({len(converted)} keys)')
    if args.verify:
        difference = max_output_difference(source, dst, depth, args.prefix,
                                           args.head_prefix)
        print(f'max |torchvision - mmpretrain| = {difference:.3g}')
        if difference > VERIFY_TOLERANCE:
            raise SystemExit(f'error: outputs differ by {difference:.3g} '
                             f'> {VERIFY_TOLERANCE}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
