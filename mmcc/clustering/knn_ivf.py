"""Approximate kNN for large N: PCA, an inverted file, exact re-scoring,
refinement through neighbours' neighbours.

The exact search costs O(N^2 D): about 4 hours for N = 1,000,000, D = 2,048
on 2 CPU cores. This search costs O(N D d) for the projection, O(N nprobe
(N / nlist) d) for the inverted file (d << D) and O(N c D) for re-scoring
c candidates a row:

1. **PCA** (plain torch; top eigenvectors of a sample's covariance) to
   ``d = 256`` dimensions. The rows are unit vectors, so cosine order is
   Euclidean order, which a centred projection keeps up to the discarded
   variance.
2. **Inverted file** (faiss ``IndexIVFFlat``, L2) over the projected rows:
   ``nlist = 4 sqrt(N)`` k-means cells (faiss's rule of thumb), trained on
   64 points a cell; a query scans the ``nprobe`` nearest cells for its
   ``2 k`` nearest projected points.
3. **Exact re-scoring**: float32 inner products of the full D-dimensional
   rows with those candidates, read in place
   (:func:`mmcc.clustering.knn_screened.rescore`); the best ``k`` are kept.
   The returned similarities are therefore exact; only a true neighbour
   that never became a candidate is lost.
4. **Refinement** (:func:`refine`): what the projection lost is mostly
   found among the neighbours' neighbours (the kNN graph is clustered), so
   each round re-scores every row's list together with the first 10
   entries of its first 10 neighbours' lists.

**Recall is measured, not assumed.** A seeded sample of rows (256) is
searched exactly. nprobe doubles from 8 until the sample's recall@k (the
share of the exact lists' entries found) reaches ``recall_target`` or a
doubling gains less than 0.02 (the rest is mostly the projection's loss);
after the full search, refinement rounds run until the target or a gain
below 0.002 (at most 3). The recall after every stage is logged and returned in
``info``.

Memory beyond the input: the projected rows twice (the array and the
index's copy, 2 N d float32: 2 GiB at N = 10^6, d = 256) and two copies of
the (N, k) output; the search and re-scoring run in chunks of rows.
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
# nprobe ladder start and the calibration sample. A doubling of nprobe
# that gains less recall than MIN_PROBE_GAIN ends the ladder (a doubling
# doubles the search time; refinement is cheaper for the last points), a
# refinement round that gains less than MIN_REFINE_GAIN ends refinement.
MIN_NPROBE = 8
CALIBRATION_ROWS = 256
RECALL_TARGET = 0.97
MIN_PROBE_GAIN = 0.02
MIN_REFINE_GAIN = 0.002
# Refinement: neighbours' lists joined per row, at most this many rounds.
REFINE_FANOUT = 10
MAX_REFINE_ROUNDS = 3
REFINE_CHUNK_ROWS = 8192
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
            ``pca_dim``, ``calibration_recall`` (of the chosen nprobe;
            None when nprobe was given), ``recall_rounds`` (sample recall
            after the search and after each refinement round),
            ``sample_recall`` (the last) and the seconds of the stages
            (``time_*``).

    Returns:
        tuple: (N, k) int64 ids (-1 where fewer than k candidates were
        found) and (N, k) float32 exact inner products, best first.
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
    rows = _sample(n, calibration_rows, rng)
    _, exact = faiss.knn(
        np.ascontiguousarray(x[rows]), x, k, metric=faiss.METRIC_INNER_PRODUCT)
    if nprobe is None:
        # Double nprobe until the target, or until doubling gains less than
        # MIN_PROBE_GAIN: the rest of the loss is then mostly the
        # projection's, which more cells barely recover and refinement
        # below does.
        nprobe = min(MIN_NPROBE, nlist)
        while True:
            index.nprobe = nprobe
            approx, _ = _search_rows(index, x, z, rows, num_candidates, k)
            gain = _recall(approx, exact) - (recall or 0.0)
            recall = gain + (recall or 0.0)
            if recall >= recall_target or nprobe >= nlist or (
                    nprobe > MIN_NPROBE and gain < MIN_PROBE_GAIN):
                break
            nprobe = min(nlist, 2 * nprobe)
    info['time_calibrate'] = time.perf_counter() - tic
    index.nprobe = nprobe
    info.update(
        nlist=nlist, nprobe=nprobe, pca_dim=pca_dim, calibration_recall=recall)

    tic = time.perf_counter()
    ids = np.empty((n, k), np.int64)
    sims = np.empty((n, k), np.float32)
    for start in range(0, n, SEARCH_CHUNK_ROWS):
        chunk = slice(start, min(n, start + SEARCH_CHUNK_ROWS))
        ids[chunk], sims[chunk] = _search_rows(index, x, z, chunk,
                                               num_candidates, k)
    info['time_search'] = time.perf_counter() - tic
    del index

    # Refinement: a true neighbour lost by the projection is usually a
    # neighbour of a found neighbour. Each round re-scores, exactly, every
    # row's list together with the first REFINE_FANOUT entries of its first
    # REFINE_FANOUT neighbours' lists; rounds stop at the target recall or
    # when a round gains less than MIN_REFINE_GAIN.
    tic = time.perf_counter()
    recall = _recall(ids[rows], exact)
    info['recall_rounds'] = [recall]
    for _ in range(MAX_REFINE_ROUNDS):
        if recall >= recall_target:
            break
        ids, sims = refine(x, ids, sims, REFINE_FANOUT)
        gain = _recall(ids[rows], exact) - recall
        recall += gain
        info['recall_rounds'].append(recall)
        if gain < MIN_REFINE_GAIN:
            break
    info['time_refine'] = time.perf_counter() - tic
    info['sample_recall'] = recall
    _log(f'ivf kNN: N={n}, D={d} -> PCA {pca_dim}, nlist={nlist}, '
         f'nprobe={nprobe}; recall@{k} on {len(rows)} sampled rows: ' +
         ' -> '.join(f'{r:.4f}' for r in info['recall_rounds']) +
         f' ({len(info["recall_rounds"]) - 1} refinement rounds, target '
         f'{recall_target})')
    return ids, sims


def refine(x: np.ndarray, ids: np.ndarray, sims: np.ndarray,
           fanout: int) -> Tuple[np.ndarray, np.ndarray]:
    """One round of neighbour-of-neighbour refinement of kNN lists.

    Args:
        x: (N, D) float32 rows.
        ids: (N, k) int64 current lists, best first, -1 for missing.
        sims: (N, k) float32 their inner products.
        fanout: The first ``fanout`` entries of the first ``fanout``
            neighbours' lists join each row's candidates.

    Returns:
        (N, k) ids and exact inner products of the best ``k`` of the row's
        list and those candidates (no list gets worse).
    """
    n, k = ids.shape
    fanout = min(fanout, k)
    out_ids = np.empty_like(ids)
    out_sims = np.empty_like(sims)
    for start in range(0, n, REFINE_CHUNK_ROWS):
        rows = slice(start, min(n, start + REFINE_CHUNK_ROWS))
        near = ids[rows, :fanout]
        second = ids[np.where(near < 0, 0, near), :fanout]
        second[near < 0] = -1
        cand = np.concatenate([ids[rows], second.reshape(len(near), -1)], 1)
        cand.sort(axis=1)
        bad = cand < 0
        bad[:, 1:] |= cand[:, 1:] == cand[:, :-1]  # duplicates
        scores = rescore(
            x, np.where(bad, 0, cand), queries=np.ascontiguousarray(x[rows]))
        scores[bad] = -np.inf
        order = np.argsort(-scores, axis=1, kind='stable')[:, :k]
        out_ids[rows] = np.take_along_axis(cand, order, axis=1)
        out_sims[rows] = np.take_along_axis(scores, order, axis=1)
        # a row with fewer than k valid candidates keeps -1 entries
        out_ids[rows][~np.isfinite(out_sims[rows])] = -1
    return out_ids, out_sims
