"""Approximate kNN for large N: PCA, an inverted file, exact re-scoring.

The exact search costs O(N^2 D): about 4 hours for N = 1,000,000, D = 2,048
on 2 CPU cores. This search costs O(N D d) for the projection and O(N
nprobe (N / nlist) d) for the inverted file, d << D:

1. **PCA** (faiss ``PCAMatrix``, trained on a sample) to ``d = 256``
   dimensions. The rows are unit vectors, so cosine order is Euclidean
   order, which a centred projection keeps up to the discarded variance
   (re-ID embeddings put most of theirs on few axes: 90 % on 256 of 1,280
   for ImageNet MobileNetV2 on market1501-trainsplit).
2. **Inverted file** (faiss ``IndexIVFFlat``, L2) over the projected rows:
   ``nlist = 4 sqrt(N)`` k-means cells (faiss's rule of thumb), trained on
   64 points a cell; a query scans the ``nprobe`` nearest cells for its
   ``candidates_per_k * k`` nearest projected points.
3. **Exact re-scoring**: float32 inner products of the full D-dimensional
   rows with those candidates, read in place
   (:func:`mmcc.clustering.knn_screened.rescore`); the best ``k`` are kept.
   The returned similarities are therefore exact; only a true neighbour
   that never became a candidate is lost.

**nprobe is measured, not assumed.** Before the full search, a seeded
sample of rows (256 by default) is searched exactly and approximately with
nprobe = 8, 16, 32, ... until recall@k (the share of the exact lists'
entries found, after re-scoring) reaches ``recall_target``; the full search
then uses that nprobe. The measured recall is logged and returned.

Memory beyond the input: the projected rows twice (the array and the
index's copy, 2 N d float32: 2 GiB at N = 10^6, d = 256) and the output;
the search and re-scoring run in chunks of rows.
"""
import logging
import math
import time
from typing import Optional, Tuple, Union

import numpy as np
import torch
from mmengine.logging import print_log

from .knn_screened import rescore

try:
    import faiss
except ImportError:  # pragma: no cover - knn_search checks before calling
    faiss = None

# nlist = 4 sqrt(N) cells, at least 39 training points each (below that
# faiss's k-means warns), trained on 64 points a cell.
CELLS_PER_SQRT_N = 4
MIN_TRAIN_PER_CELL = 39
TRAIN_PER_CELL = 64
# The projection: 256 dimensions, fitted on up to 100,000 rows (a 2,048 x
# 2,048 covariance needs far fewer; more only costs time).
PCA_DIM = 256
PCA_TRAIN_ROWS = 100_000
# Candidates per returned neighbour: the projection reorders near-ties, so
# the true k-th neighbour is often just below the projected top k.
CANDIDATES_PER_K = 2
# nprobe ladder start and the calibration sample.
MIN_NPROBE = 8
CALIBRATION_ROWS = 256
RECALL_TARGET = 0.97
# Queries searched and re-scored at a time: bounds the (rows, m) results.
SEARCH_CHUNK_ROWS = 32768


def _log(message: str) -> None:
    print_log(message, logger='current', level=logging.INFO)


def _sample(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``min(n, size)`` distinct rows."""
    if size >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size, replace=False))


def project(x: np.ndarray, dim: int, train_rows: int,
            rng: np.random.Generator) -> np.ndarray:
    """(N, D) rows -> (N, dim) float32 centred PCA coordinates.

    The axes are the top eigenvectors of the covariance of ``train_rows``
    sampled rows (float64 eigensolver); the projection runs chunk by chunk
    (no (N, D) temporary). Plain torch: faiss's ``PCAMatrix`` took minutes
    to train here for what this does in seconds.
    """
    n, d = x.shape
    sample = torch.from_numpy(x[_sample(n, train_rows, rng)])
    mean = sample.mean(0, dtype=torch.float64)
    centred = sample.double() - mean
    cov = centred.T @ centred / max(1, len(sample) - 1)
    del centred, sample
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    axes = vecs[:, -dim:].flip(1).float().contiguous()  # (D, dim)
    shift = (mean.float() @ axes).numpy()
    axes_np = axes.numpy()
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, SEARCH_CHUNK_ROWS):
        stop = min(n, start + SEARCH_CHUNK_ROWS)
        np.matmul(x[start:stop], axes_np, out=out[start:stop])
        out[start:stop] -= shift
    return out


def _search_rows(index, x: np.ndarray, z: np.ndarray, rows: Union[slice,
                                                                  np.ndarray],
                 num_candidates: int, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Search ``z[rows]`` in ``index``, re-score with ``x``, keep ``k``.

    Returns (rows, k) int64 ids (-1 where fewer than k candidates came back)
    and their float32 inner products (-inf there).
    """
    _, cand = index.search(np.ascontiguousarray(z[rows]), num_candidates)
    missing = cand < 0
    safe = np.where(missing, 0, cand)
    sims = rescore(x, safe, queries=np.ascontiguousarray(x[rows]))
    sims[missing] = -np.inf
    order = np.argsort(-sims, axis=1, kind='stable')[:, :k]
    ids = np.take_along_axis(cand, order, axis=1)
    return ids, np.take_along_axis(sims, order, axis=1)


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact lists' entries present in the approximate ones."""
    hits = sum(
        np.intersect1d(a, e, assume_unique=True).size
        for a, e in zip(approx, exact))
    return hits / exact.size


def ivf_search(x: np.ndarray,
               k: int,
               nlist: Optional[int] = None,
               nprobe: Optional[int] = None,
               pca_dim: Optional[int] = PCA_DIM,
               candidates_per_k: int = CANDIDATES_PER_K,
               recall_target: float = RECALL_TARGET,
               calibration_rows: int = CALIBRATION_ROWS,
               seed: int = 0,
               info: Optional[dict] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Approximate k nearest rows (inner product) of every row of ``x``.

    Args:
        x: (N, D) float32 C-contiguous unit rows.
        k: Neighbours per row (the row itself among them, normally first).
        nlist: Inverted-file cells; default ``4 sqrt(N)``, at most N / 39.
        nprobe: Cells scanned per query; default: calibrated (see the
            module docstring).
        pca_dim: Projected dimension; ``None`` or ``>= D`` searches the
            full rows.
        candidates_per_k: Candidates re-scored per returned neighbour.
        recall_target: Recall@k the calibration must reach (0 < r <= 1).
        calibration_rows: Sample searched exactly to calibrate nprobe.
        seed: Seed of the samples (PCA, k-means, calibration).
        info: Optional dict that receives ``nlist``, ``nprobe``,
            ``pca_dim``, ``calibration_recall`` (None when nprobe was
            given) and the seconds of the stages (``time_*``).

    Returns:
        tuple: (N, k) int64 ids (-1 where the probed cells held fewer than
        k points) and (N, k) float32 exact inner products, best first.
    """
    if not 0 < recall_target <= 1:
        raise ValueError(f'recall_target must be in (0, 1], got '
                         f'{recall_target}')
    info = {} if info is None else info
    n, d = x.shape
    rng = np.random.default_rng(seed)
    tic = time.perf_counter()
    if pca_dim and pca_dim < d:
        z = project(x, pca_dim, PCA_TRAIN_ROWS, rng)
    else:
        z, pca_dim = x, d
    info['time_project'] = time.perf_counter() - tic

    tic = time.perf_counter()
    nlist = nlist or max(
        1, min(int(CELLS_PER_SQRT_N * math.sqrt(n)), n // MIN_TRAIN_PER_CELL))
    quantizer = faiss.IndexFlatL2(pca_dim)
    index = faiss.IndexIVFFlat(quantizer, pca_dim, nlist, faiss.METRIC_L2)
    index.train(
        np.ascontiguousarray(z[_sample(n, TRAIN_PER_CELL * nlist, rng)]))
    for start in range(0, n, SEARCH_CHUNK_ROWS):
        index.add(np.ascontiguousarray(z[start:start + SEARCH_CHUNK_ROWS]))
    info['time_index'] = time.perf_counter() - tic

    num_candidates = min(n, candidates_per_k * k)
    recall = None
    tic = time.perf_counter()
    if nprobe is None:
        rows = _sample(n, calibration_rows, rng)
        _, exact = faiss.knn(
            np.ascontiguousarray(x[rows]),
            x,
            k,
            metric=faiss.METRIC_INNER_PRODUCT)
        nprobe = min(MIN_NPROBE, nlist)
        while True:
            index.nprobe = nprobe
            approx, _ = _search_rows(index, x, z, rows, num_candidates, k)
            recall = _recall(approx, exact)
            if recall >= recall_target or nprobe >= nlist:
                break
            nprobe = min(nlist, 2 * nprobe)
    info['time_calibrate'] = time.perf_counter() - tic
    index.nprobe = nprobe
    info.update(
        nlist=nlist, nprobe=nprobe, pca_dim=pca_dim, calibration_recall=recall)
    _log(f'ivf kNN: N={n}, D={d} -> PCA {pca_dim}, nlist={nlist}, '
         f'nprobe={nprobe}' +
         ('' if recall is None else
          f' (calibrated: recall@{k} {recall:.4f} on {len(rows)} rows, '
          f'target {recall_target})'))

    tic = time.perf_counter()
    ids = np.empty((n, k), np.int64)
    sims = np.empty((n, k), np.float32)
    for start in range(0, n, SEARCH_CHUNK_ROWS):
        rows = slice(start, min(n, start + SEARCH_CHUNK_ROWS))
        ids[rows], sims[rows] = _search_rows(index, x, z, rows, num_candidates,
                                             k)
    info['time_search'] = time.perf_counter() - tic
    return ids, sims
