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
"""
import argparse
import sys
from pathlib import Path

import torch

from mmcc.models.utils.checkpoint_convert import (CheckpointKeyError,
                                                  backbone_state_dict,
                                                  convert_torchvision_resnet,
                                                  extract_state_dict,
                                                  infer_resnet_depth)

VERIFY_TOLERANCE = 1e-5
VERIFY_INPUT_SHAPE = (2, 3, 256, 128)  # a re-ID batch


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
