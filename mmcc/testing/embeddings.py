"""Synthetic re-ID embeddings for clustering benchmarks, at any N.

Real re-ID embeddings are not isotropic: a large component is common to
every image (ImageNet MobileNetV2 on market1501-trainsplit: the mean unit
embedding has norm 0.75, a random pair has cosine 0.56), the rest lives in
few directions (participation ratio 62 of 1,280 dimensions; 256 principal
axes hold 90 % of the variance), and an image's nearest neighbours are
mostly *other* identities (precision@1 0.34). Approximate kNN search is
easy on isotropic Gaussian clusters and hard on such data, so benchmarks of
it need the structure. :func:`make_reid_embeddings` builds it from parts::

    x = normalise(w_common c + w_family f[family] + w_identity u[id]
                  + w_camera v[camera] + w_tracklet t
                  + w_nuisance g + w_noise e)

* ``c``: one direction shared by every image;
* ``f``: look-alike families of 1 to 4 identities (hard negatives);
* ``u``: the identity; identities have 1 to 30 images;
* ``v``: one of 6 cameras (a shift shared by every image it takes);
* ``t``: the tracklet: 1 to 6 consecutive images of one identity under one
  camera share this shift (near duplicates, as frames of a track are);
* ``g``: nuisance, ``z @ G`` for 8 continuous factors ``z`` per image
  (pose, background, light), the same map ``G`` for every identity: what
  makes an image's nearest neighbours mostly other identities;
* ``e``: per-image noise;
* distractors (``distractor_frac`` of the images) have an identity of their
  own, are labelled -1 and share only ``c`` and a camera.

Every random vector is Gaussian with per-dimension variance ``s_j`` falling
as ``(j + 1) ** -1.1`` (sum 1, so each part has unit expected norm), a
power law like the spectrum of real embeddings. The default weights were
fitted at N = 10,000 to the statistics above and the neighbour similarities
(``tools/analysis_tools/benchmark_pseudo_labels.py --compare-real`` prints
both side by side; the table is in docs/scaling.md). All the methods
benchmarked (inner products, k-means, PCA) are rotation invariant, so the
axes need no random rotation.
"""
from typing import Tuple

import numpy as np

# Fitted (Nelder-Mead, then the tracklet weight by hand) at N = 10,000,
# D = 2,048 to ImageNet MobileNetV2 embeddings of market1501-trainsplit
# (128x64 input): neighbour and pair similarities, precision, spectrum, and
# the share of DBSCAN noise. The two side by side: docs/scaling.md.
DEFAULT_WEIGHTS = dict(
    common=2.1,
    family=0.63,
    identity=0.4,
    camera=0.39,
    nuisance=1.1,
    tracklet=0.9,
    noise=1.0)
# A plain power law, (j + 1) ** -1.1. The real spectrum is closer to
# (j + 11.7) ** -1.55 (least squares on its log-variances), but with that
# spectrum the synthetic set was harder for the inverted file than the
# real one (recall@30 0.65 against 0.76 scanning 1/32 of the cells, N =
# 10,000), and with 1.1 it is about as hard (0.75 against 0.76; 0.97
# against 0.97 scanning 1/8): the property the benchmark measures.
DEFAULT_DECAY = 1.1
SPECTRUM_SHIFT = 1.0
NUM_CAMERAS = 6
# Pose, background, light...: a few continuous factors every image has,
# whatever its identity.
NUISANCE_DIM = 8
MAX_IDENTITY_SIZE = 30
MAX_FAMILY_SIZE = 4
MAX_TRACKLET = 6


def spectrum(dim: int,
             decay: float,
             shift: float = SPECTRUM_SHIFT) -> np.ndarray:
    """(dim,) float32 per-dimension standard deviations, squares summing to
    1, variances falling as ``(j + shift) ** -decay``."""
    var = (np.arange(dim, dtype=np.float64) + shift)**-decay
    return np.sqrt(var / var.sum()).astype(np.float32)


def identity_sizes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Sizes (1..30, mean about 12) of identities covering ``n`` images."""
    sizes = []
    left = n
    while left > 0:
        # log-uniform in [1, 30]: many small identities, some large ones
        size = int(np.exp(rng.uniform(0, np.log(MAX_IDENTITY_SIZE + 1))))
        size = max(1, min(size, MAX_IDENTITY_SIZE, left))
        sizes.append(size)
        left -= size
    return np.asarray(sizes, dtype=np.int64)


def make_reid_embeddings(n: int,
                         dim: int = 2048,
                         seed: int = 0,
                         distractor_frac: float = 0.1,
                         decay: float = DEFAULT_DECAY,
                         chunk: int = 16384,
                         **weights) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded synthetic embeddings with re-ID-like neighbourhoods.

    Args:
        n: Number of images N.
        dim: Embedding dimension D.
        seed: Seed; equal arguments give equal arrays.
        distractor_frac: Share of images that belong to no identity.
        decay: Exponent of the variance spectrum.
        chunk: Images made at a time (bounds the temporary memory to a few
            (chunk, D) float32 blocks; no float64 copy of the output).
        **weights: Overrides of :data:`DEFAULT_WEIGHTS`.

    Returns:
        tuple: (N, D) float32 unit rows, and (N,) int64 identities, -1
        for distractors (identities in random order, an identity's
        tracklets contiguous, the distractors last).
    """
    unknown = set(weights) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise TypeError(f'unknown weights {sorted(unknown)}')
    w = dict(DEFAULT_WEIGHTS, **weights)
    rng = np.random.default_rng(seed)
    scale = spectrum(dim, decay)

    def gaussian(*shape):
        return rng.standard_normal((*shape, dim), dtype=np.float32) * scale

    num_distractors = int(round(n * distractor_frac))
    sizes = identity_sizes(n - num_distractors, rng)
    num_ids = sizes.size
    family = np.repeat(
        np.arange(num_ids), rng.integers(1, MAX_FAMILY_SIZE + 1,
                                         num_ids))[:num_ids]
    family_vecs = gaussian(int(family.max()) + 1)
    # identity centre = its own part + its family's part (small arrays: one
    # row per identity, not per image)
    centres = w['identity'] * gaussian(num_ids)
    centres += w['family'] * family_vecs[family]
    del family_vecs
    common = w['common'] * gaussian()
    cameras = w['camera'] * gaussian(NUM_CAMERAS)
    # (NUISANCE_DIM, D): an image's nuisance factors z ~ N(0, I) map to
    # z @ nuisance / sqrt(NUISANCE_DIM), of unit expected norm
    nuisance = w['nuisance'] * gaussian(NUISANCE_DIM) / np.sqrt(NUISANCE_DIM)

    # Images come in tracklets (1 to 6 consecutive frames of one identity
    # under one camera: near duplicates), identities in shuffled order and
    # their tracklets contiguous, as crops listed by video and time are.
    # Distractors are single-image tracklets at the end.
    order = rng.permutation(num_ids)
    labels = np.concatenate(
        [np.repeat(order, sizes[order]),
         np.full(num_distractors, -1)]).astype(np.int64)
    track_len = []
    for size in sizes[order]:
        left = int(size)
        while left > 0:
            length = min(left, int(rng.integers(1, MAX_TRACKLET + 1)))
            track_len.append(length)
            left -= length
    track_len = np.asarray(track_len + [1] * num_distractors, np.int64)
    track_start = np.concatenate([[0], np.cumsum(track_len)])
    track_camera = rng.integers(0, NUM_CAMERAS, track_len.size)
    feats = np.empty((n, dim), np.float32)
    first = 0  # chunks end on tracklet boundaries
    while first < track_len.size:
        last = int(
            np.searchsorted(track_start, track_start[first] + chunk,
                            'right')) - 1
        last = min(track_len.size, max(last, first + 1))
        start, stop = track_start[first], track_start[last]
        lens = track_len[first:last]
        lab = labels[start:stop]
        x = w['noise'] * gaussian(stop - start)
        x += common
        x += np.repeat(cameras[track_camera[first:last]], lens, axis=0)
        x += np.repeat(w['tracklet'] * gaussian(last - first), lens, axis=0)
        x += rng.standard_normal(
            (stop - start, NUISANCE_DIM), dtype=np.float32) @ nuisance
        known = lab >= 0
        x[known] += centres[lab[known]]
        # a distractor is its own identity: a centre nobody else shares
        x[~known] += w['identity'] * gaussian(int((~known).sum()))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        feats[start:stop] = x
        first = last
    return feats, labels


def neighbour_statistics(features: np.ndarray,
                         labels: np.ndarray,
                         k: int = 30,
                         seed: int = 0) -> dict:
    """Statistics of a set of embeddings that approximate search meets.

    Args:
        features: (N, D) float rows (normalised here).
        labels: (N,) identities, -1 for images of no known identity.
        k: Neighbours looked at (the point itself excluded).

    Returns:
        dict: mean cosine of the 1st/10th/k-th neighbour (``sim_1``,
        ``sim_10``, ``sim_k``), mean and std of a random pair's cosine,
        precision@1 and @10 (same identity), norm of the mean embedding,
        participation ratio of the covariance spectrum and the variance
        share of its first 64 and 256 axes.
    """
    from mmcc.clustering import knn_search
    x = np.asarray(features, dtype=np.float32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    ids, sims = knn_search(x, k + 1, method='exact')
    ids, sims = ids[:, 1:], sims[:, 1:]
    a, b = rng.integers(0, len(x), (2, 20000))
    pairs = np.einsum('nd,nd->n', x[a], x[b])
    same = (labels[ids] == labels[:, None]) & (labels[:, None] >= 0)
    centred = x - x.mean(0)
    var = np.linalg.eigvalsh(centred.T.astype(np.float64) @ centred /
                             len(x))[::-1].clip(min=0)
    return dict(
        sim_1=float(sims[:, 0].mean()),
        sim_10=float(sims[:, 9].mean()),
        sim_k=float(sims[:, k - 1].mean()),
        pair_mean=float(pairs.mean()),
        pair_std=float(pairs.std()),
        precision_1=float(same[:, 0].mean()),
        precision_10=float(same[:, :10].mean()),
        mean_norm=float(np.linalg.norm(x.mean(0))),
        participation_ratio=float(var.sum()**2 / (var**2).sum()),
        top64_variance=float(var[:64].sum() / var.sum()),
        top256_variance=float(var[:256].sum() / var.sum()))
