"""Export a re-ID embedder to ONNX, e.g. as a tracker's appearance model.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT \\
        --out reid.onnx [--verify] [--opset 18]

The graph takes ``images``: (B, 3, H, W) float32 **RGB** pixel values in
0-255, resized to the config's test size (H, W from the test pipeline's
``Resize``, with its interpolation), B dynamic; it returns ``embeddings``:
(B, D) L2-normalised. The data preprocessor's mean/std and the final L2
normalisation are inside the graph, so a caller only crops, converts BGR to
RGB, resizes and stacks. The input size and interpolation are also stored in
the model's metadata (``mmcc_input_size`` "H,W", ``mmcc_interpolation``).

The default exporter is torch's dynamo exporter (``dynamo=True``, needs
``onnxscript``); ``--legacy-exporter`` uses the TorchScript one, which
cannot export GeM pooling (the ResNet-50 configs) with a dynamic batch.

``--verify`` compares onnxruntime with PyTorch on random images at batch
sizes 1 and 3 and exits with status 1 when the largest absolute difference
exceeds 1e-4.
"""
import argparse
import os.path as osp
import sys
import warnings
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import DictAction

TOLERANCE = 1e-4
VERIFY_BATCH_SIZES = (1, 3)
INPUT_NAME, OUTPUT_NAME = 'images', 'embeddings'


class ONNXEmbedder(nn.Module):
    """A :class:`ReIDModel`'s backbone and neck behind its preprocessing.

    (B, 3, H, W) float RGB in 0-255 -> (B, D) unit embeddings: what the
    model's data preprocessor (channel order, mean/std) and
    ``forward(mode='tensor')`` compute, as one module.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        pre = model.data_preprocessor
        if getattr(pre, 'pad_size_divisor', 1) > 1:
            raise ValueError('a data preprocessor that pads '
                             '(pad_size_divisor > 1) is not supported')
        self.backbone = model.backbone
        self.neck = model.neck
        # the preprocessor's mean/std apply after its optional BGR->RGB
        # flip; a model that never flips consumes BGR (as mmcv loads it)
        self.rgb_to_bgr = not getattr(pre, 'to_rgb', False)
        if getattr(pre, '_enable_normalize', False):
            mean = pre.mean.detach().float().reshape(1, -1, 1, 1).clone()
            std = pre.std.detach().float().reshape(1, -1, 1, 1).clone()
        else:
            mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
        self.register_buffer('mean', mean)
        self.register_buffer('std', std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.rgb_to_bgr:
            images = images.flip(1)
        x = (images - self.mean) / self.std
        return F.normalize(self.neck(self.backbone(x)), dim=1)


def _test_resize(cfg) -> dict:
    resizes = [
        t for t in cfg.test_dataloader.dataset.pipeline
        if str(t['type']).split('.')[-1] == 'Resize' and 'scale' in t
    ]
    if not resizes:
        raise ValueError('the test pipeline has no Resize with a scale: '
                         'give the input size with --shape H W')
    return resizes[-1]


def test_input_size(cfg) -> Tuple[int, int]:
    """(H, W) of the config's test images: its test ``Resize`` ``scale``,
    which is (W, H) in mmcv's convention (an int is a square)."""
    resize = _test_resize(cfg)
    if resize.get('keep_ratio', False):
        raise ValueError('the test Resize keeps the aspect ratio, so the '
                         'input size varies: give it with --shape H W')
    scale = resize['scale']
    if isinstance(scale, int):
        return scale, scale
    width, height = scale
    return int(height), int(width)


def test_interpolation(cfg) -> str:
    try:
        return _test_resize(cfg).get('interpolation', 'bilinear')
    except ValueError:
        return 'unknown'


def export(embedder: nn.Module,
           out: str,
           size: Tuple[int, int],
           opset: int = 18,
           dynamo: bool = True) -> None:
    """Write ``embedder`` as ONNX with a dynamic batch dimension."""
    embedder.eval()
    # batch 2: an example batch of 1 would be specialised to a constant
    example = torch.rand(2, 3, *size) * 255
    common = dict(
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset)
    with torch.no_grad():
        if dynamo:
            torch.onnx.export(
                embedder,
                (example, ),
                out,
                dynamo=True,
                external_data=False,  # one self-contained file
                dynamic_shapes={INPUT_NAME: {
                    0: torch.export.Dim('batch')
                }},
                **common)
        else:
            torch.onnx.export(
                embedder, (example, ),
                out,
                dynamo=False,
                dynamic_axes={
                    INPUT_NAME: {
                        0: 'batch'
                    },
                    OUTPUT_NAME: {
                        0: 'batch'
                    }
                },
                **common)


def add_metadata(path: str, props: Dict[str, str]) -> None:
    import onnx
    model = onnx.load(path)
    onnx.helper.set_model_props(model, props)
    onnx.save(model, path)


def verify(embedder: nn.Module,
           path: str,
           size: Tuple[int, int],
           batch_sizes: Sequence[int] = VERIFY_BATCH_SIZES,
           seed: int = 0) -> Dict[int, float]:
    """Max abs difference of onnxruntime vs PyTorch per batch size, on
    random 0-255 images."""
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    gen = torch.Generator().manual_seed(seed)
    diffs = {}
    for batch in batch_sizes:
        images = torch.randint(
            0, 256, (batch, 3, *size), generator=gen).float()
        with torch.no_grad():
            expected = embedder(images).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
        if got.shape != expected.shape:
            raise AssertionError(f'onnxruntime returned {got.shape}, '
                                 f'PyTorch {expected.shape}')
        diffs[batch] = float(np.abs(got - expected).max())
    return diffs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export a re-ID embedder to ONNX')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', required=True, help='output .onnx file')
    parser.add_argument(
        '--opset', type=int, default=18, help='ONNX opset (default 18)')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='input size; default: the test pipeline\'s Resize scale')
    parser.add_argument(
        '--legacy-exporter',
        action='store_true',
        help='use the TorchScript exporter (dynamo=False) instead of '
        'the default dynamo exporter (it fails on GeM pooling)')
    parser.add_argument(
        '--verify',
        action='store_true',
        help='compare onnxruntime with PyTorch at batch sizes 1 and 3; '
        f'exit 1 above {TOLERANCE:g}')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. model.neck.pooling=None')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmcc.apis import init_model
    model = init_model(
        args.config,
        args.checkpoint,
        device='cpu',
        cfg_options=args.cfg_options)
    size = tuple(args.shape) if args.shape else test_input_size(model.cfg)
    embedder = ONNXEmbedder(model).eval()

    exporter = 'legacy (dynamo=False)' if args.legacy_exporter else 'dynamo'
    export(
        embedder,
        args.out,
        size,
        opset=args.opset,
        dynamo=not args.legacy_exporter)
    add_metadata(
        args.out, {
            'mmcc_input': 'images: (B, 3, H, W) float32 RGB 0-255',
            'mmcc_input_size': f'{size[0]},{size[1]}',
            'mmcc_interpolation': test_interpolation(model.cfg),
            'mmcc_output': 'embeddings: (B, D) L2-normalised',
            'mmcc_config': osp.basename(args.config),
        })
    print(f'Wrote {args.out} ({exporter} exporter, opset {args.opset}): '
          f'{INPUT_NAME} (B, 3, {size[0]}, {size[1]}) RGB 0-255 -> '
          f'{OUTPUT_NAME} (B, D)')
    if not args.verify:
        return 0
    diffs = verify(embedder, args.out, size)
    worst = max(diffs.values())
    for batch, diff in diffs.items():
        print(f'batch {batch}: max abs difference onnxruntime vs PyTorch '
              f'{diff:.3g}')
    if worst > TOLERANCE:
        print(f'FAILED: {worst:.3g} > {TOLERANCE:g}', file=sys.stderr)
        return 1
    print(f'verified: max abs difference {worst:.3g} <= {TOLERANCE:g}')
    return 0


if __name__ == '__main__':
    warnings.filterwarnings('ignore', category=DeprecationWarning)
    sys.exit(main())
