"""Approximate kNN for large N: PCA, k-means cells joined cell by cell,
exact re-scoring, refinement through neighbours' neighbours.

The exact search costs O(N^2 D): about 4 hours for N = 1,000,000, D = 2,048
on 2 CPU cores. This search costs O(N D d) for the projection and
O(N s d) for the join, where every row meets ``s`` candidate rows in
``d << D`` dimensions (``s`` is capped: linear in N beyond the cap), plus
O(N c D) for re-scoring ``c`` candidates a row:

1. **PCA** (plain torch; top eigenvectors of a sample's covariance) to
   ``d = 256`` dimensions. The rows are unit vectors, so cosine order is
   Euclidean order, which a centred projection keeps up to the discarded
   variance.
2. **Cells**: faiss k-means, ``nlist = 4 sqrt(N)`` cells (faiss's rule of
   thumb for inverted files), trained on 64 points a cell.
3. **Cell join** (:class:`CellJoin`): the rows of a cell share one
   candidate block, the rows of the ``nprobe`` cells whose centroids are
   nearest to the cell's centroid; one matrix product and a top-``c`` per
   cell rank them by projected L2 distance (bfloat16 products where the
   CPU has them). A per-query inverted-file scan (faiss ``IndexIVFFlat``)
   finds more per scanned row, but runs at memory speed: at N = 10^6 it
   needed 22 min for recall 0.90 here, where the join runs at BLAS speed.
4. **Exact re-scoring**: float32 inner products of the full D-dimensional
   rows with the ``c = 4 k`` candidates, read in place
   (:func:`mmcc.clustering.knn_screened.rescore`); the best ``k`` are kept.
   The returned similarities are therefore exact; only a true neighbour
   that never became a candidate is lost.
5. **Refinement** (:func:`refine`): each round re-scores every row's list
   together with the first 10 entries of its first 10 neighbours' lists.

**Recall is measured, not assumed.** A seeded sample of rows (256) is
searched exactly. nprobe doubles from 8 until the sample's recall@k (the
share of the exact lists' entries found) reaches ``recall_target``, a
doubling gains less than 0.02, or a row would meet more than
``max_scan_rows`` candidates (the cost cap); after the join, refinement
rounds run until one gains less than 0.002 (1 to 3 rounds). The recall
after every stage is logged and returned in ``info``.

Memory beyond the input: the projected rows three times (the array while
the join is built, then its two (N, d + 1) operands: 3 GiB at N = 10^6,
d = 256, in float32), the (N, c) candidate ids and two copies of the
(N, k) output; the re-scoring runs in chunks of rows.
"""
import logging
import math
import time
from typing import Optional, Tuple

import numpy as np
import torch
from mmengine.logging import print_log

from ..utils import cpu_has_native_bf16
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
KMEANS_ITERATIONS = 10  # faiss's default for inverted-file cells
# The projection: 256 dimensions, fitted on up to 100,000 rows (a 2,048 x
# 2,048 covariance needs far fewer; more only costs time).
PCA_DIM = 256
PCA_TRAIN_ROWS = 100_000
# Candidates per returned neighbour: the projection reorders near-ties, so
# the true k-th neighbour is often well below the projected top k. On the
# synthetic re-ID embeddings at N = 10^5, half the cells joined: recall@30
# 0.977 with 2k candidates, 0.990 with 4k (docs/scaling.md).
CANDIDATES_PER_K = 4
# The join's cost cap: a row meets at most this many candidate rows
# (nprobe x mean cell size). It bounds the join to N x 125k x (d + 1)
# multiply-adds and a top-c over N x 125k scores, ~7 min at N = 10^6 with
# bfloat16 products here (1/8 of the rows; docs/scaling.md).
MAX_SCAN_ROWS = 125_000
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


def train_cells(z: np.ndarray, nlist: int,
                rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """k-means cells of the projected rows (faiss).

    Args:
        z: (N, d) float32 C-contiguous rows.
        nlist: Number of cells.
        rng: Seeds the training sample and k-means.

    Returns:
        tuple: (nlist, d) float32 centroids and (N,) int64 cell of every
        row (its nearest centroid, L2).
    """
    n, d = z.shape
    kmeans = faiss.Kmeans(
        d,
        nlist,
        niter=KMEANS_ITERATIONS,
        seed=int(rng.integers(2**31 - 1)),
        max_points_per_centroid=TRAIN_PER_CELL)
    kmeans.train(
        np.ascontiguousarray(z[_sample(n, TRAIN_PER_CELL * nlist, rng)]))
    centroids = kmeans.centroids
    assign = np.empty(n, np.int64)
    for start in range(0, n, SEARCH_CHUNK_ROWS):
        stop = min(n, start + SEARCH_CHUNK_ROWS)
        _, nearest = kmeans.index.search(
            np.ascontiguousarray(z[start:stop]), 1)
        assign[start:stop] = nearest[:, 0]
    return centroids, assign


class CellJoin:
    """Candidates of every row from the cells nearest to its own cell.

    The rows are sorted by cell; a row's candidates are the rows of the
    ``nprobe`` cells whose centroids are nearest to its own cell's centroid
    (its own cell first), ranked by projected L2 distance. All rows of a
    cell share that candidate block, so one cell is one matrix product,
    ``(rows of the cell, d) x (d, rows of the nprobe cells)``, and its
    top-``m``: BLAS speed, where faiss's ``IndexIVFFlat`` scans the cells
    query by query (memory-bound; 1.3 ms a query at N = 10^6, nprobe 128
    here, 22 min in all, against ~3 min for this join).

    Args:
        z: (N, d) float32 projected rows.
        centroids: (nlist, d) float32 cell centroids.
        assign: (N,) int64 cell of every row.
        dtype: Product dtype, ``torch.float32`` or ``torch.bfloat16``
            (fine for ranking candidates that are re-scored exactly
            afterwards; only worth it on CPUs with native bfloat16).
    """

    def __init__(self, z: np.ndarray, centroids: np.ndarray,
                 assign: np.ndarray, dtype: torch.dtype):
        self.order = np.argsort(assign, kind='stable')  # position -> row
        self.position = np.empty_like(self.order)  # row -> position
        self.position[self.order] = np.arange(len(self.order))
        counts = np.bincount(assign, minlength=len(centroids))
        self.bounds = np.concatenate([[0], np.cumsum(counts)])
        self.assign = assign
        zs = torch.from_numpy(z[self.order])
        # 2 <q, c> - |c|^2 ranks candidates c by L2 distance to q: one
        # product with q' = (2 q, -1) and c' = (c, |c|^2)
        self.candidates = torch.cat([zs, (zs * zs).sum(1, keepdim=True)],
                                    1).to(dtype)
        self.queries = torch.cat([2 * zs, -torch.ones(len(zs), 1)],
                                 1).to(dtype)
        del zs
        # cell -> cells by centroid distance, nearest (itself) first
        gram = centroids @ centroids.T
        dist = np.diag(gram)[None, :] - 2 * gram  # + |row centroid|^2
        np.fill_diagonal(dist, -np.inf)
        self.cell_order = np.argsort(dist, axis=1, kind='stable')

    def _block(self, cell: int, nprobe: int) -> np.ndarray:
        """Sorted positions of the rows of the ``nprobe`` cells nearest to
        ``cell``."""
        cells = self.cell_order[cell, :nprobe]
        return np.concatenate(
            [np.arange(self.bounds[c], self.bounds[c + 1]) for c in cells])

    def _top(self, query_positions: np.ndarray, cell: int, nprobe: int,
             m: int) -> np.ndarray:
        """(len(query_positions), m) candidate rows, -1 padded."""
        block = self._block(cell, nprobe)
        out = np.full((len(query_positions), m), -1, np.int64)
        if len(block) == 0:
            return out
        pos = torch.from_numpy(block)
        scores = self.queries[torch.from_numpy(query_positions)] @ \
            self.candidates[pos].T
        top = scores.topk(min(m, len(block)), dim=1, sorted=False).indices
        out[:, :top.shape[1]] = self.order[block[top.numpy()]]
        return out

    def candidates_of(self, rows: np.ndarray, nprobe: int,
                      m: int) -> np.ndarray:
        """(len(rows), m) candidate ids of the given rows (-1 padded)."""
        out = np.empty((len(rows), m), np.int64)
        cells = self.assign[rows]
        for cell in np.unique(cells):
            mine = np.flatnonzero(cells == cell)
            out[mine] = self._top(self.position[rows[mine]], cell, nprobe, m)
        return out

    def all_candidates(self, nprobe: int, m: int) -> np.ndarray:
        """(N, m) candidate ids of every row (-1 padded)."""
        out = np.empty((len(self.order), m), np.int64)
        for cell in range(len(self.bounds) - 1):
            lo, hi = self.bounds[cell], self.bounds[cell + 1]
            if lo < hi:
                out[self.order[lo:hi]] = self._top(
                    np.arange(lo, hi), cell, nprobe, m)
        return out


def _best(x: np.ndarray, rows: np.ndarray, cand: np.ndarray,
          k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Re-score ``cand`` (-1 = none) of ``rows`` exactly; keep the best k.

    Returns (len(rows), k) int64 ids (-1 where fewer than k candidates) and
    their float32 inner products (-inf there).
    """
    missing = cand < 0
    sims = rescore(
        x, np.where(missing, 0, cand), queries=np.ascontiguousarray(x[rows]))
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


def _product_dtype(name: str) -> torch.dtype:
    if name == 'auto':
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if name not in ('float32', 'bfloat16'):
        raise ValueError(f'product_dtype must be auto, float32 or bfloat16, '
                         f'got {name!r}')
    return getattr(torch, name)


def ivf_search(x: np.ndarray,
               k: int,
               nlist: Optional[int] = None,
               nprobe: Optional[int] = None,
               pca_dim: Optional[int] = PCA_DIM,
               candidates_per_k: int = CANDIDATES_PER_K,
               recall_target: float = RECALL_TARGET,
               calibration_rows: int = CALIBRATION_ROWS,
               max_scan_rows: int = MAX_SCAN_ROWS,
               product_dtype: str = 'auto',
               seed: int = 0,
               info: Optional[dict] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Approximate k nearest rows (inner product) of every row of ``x``.

    Args:
        x: (N, D) float32 C-contiguous unit rows.
        k: Neighbours per row (the row itself among them, normally first).
        nlist: k-means cells; default ``4 sqrt(N)``, at most N / 39.
        nprobe: Cells whose rows are a row's candidates (the cells nearest
            to its own); default: calibrated (see the module docstring).
        pca_dim: Projected dimension; ``None`` or ``>= D`` searches the
            full rows.
        candidates_per_k: Candidates re-scored per returned neighbour.
        recall_target: Recall@k the calibration must reach (0 < r <= 1).
        calibration_rows: Sample searched exactly to calibrate nprobe.
        max_scan_rows: The calibration's cost cap: nprobe stays at or
            below ``max_scan_rows * nlist / N`` (candidate rows per row).
        product_dtype: Dtype of the projected products that rank the
            candidates: ``'float32'``, ``'bfloat16'`` or ``'auto'``
            (bfloat16 where the CPU has native bfloat16 products, see
            :func:`mmcc.utils.cpu_has_native_bf16`).
        seed: Seed of the samples (PCA, k-means, calibration).
        info: Optional dict that receives ``nlist``, ``nprobe``,
            ``pca_dim``, ``product_dtype``, ``calibration_recall`` (of the
            chosen nprobe; None when nprobe was given), ``recall_rounds``
            (sample recall after the join and after each refinement
            round, 1 to 3), ``sample_recall`` (the last) and the seconds of the
            stages (``time_*``).

    Returns:
        tuple: (N, k) int64 ids (-1 where fewer than k candidates were
        found) and (N, k) float32 exact inner products, best first.
    """
    if not 0 < recall_target <= 1:
        raise ValueError(f'recall_target must be in (0, 1], got '
                         f'{recall_target}')
    dtype = _product_dtype(product_dtype)
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
    centroids, assign = train_cells(z, nlist, rng)
    join = CellJoin(z, centroids, assign, dtype)
    del z
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
        # the cost cap, in cells of mean size
        max_nprobe = max(1, min(nlist, int(max_scan_rows * nlist / n)))
        nprobe = min(MIN_NPROBE, max_nprobe)
        while True:
            approx, _ = _best(x, rows,
                              join.candidates_of(rows, nprobe, num_candidates),
                              k)
            gain = _recall(approx, exact) - (recall or 0.0)
            recall = gain + (recall or 0.0)
            if recall >= recall_target or nprobe >= max_nprobe or (
                    nprobe > MIN_NPROBE and gain < MIN_PROBE_GAIN):
                break
            nprobe = min(max_nprobe, 2 * nprobe)
    info['time_calibrate'] = time.perf_counter() - tic
    info.update(
        nlist=nlist,
        nprobe=nprobe,
        pca_dim=pca_dim,
        product_dtype=str(dtype).replace('torch.', ''),
        calibration_recall=recall)

    tic = time.perf_counter()
    cand = join.all_candidates(nprobe, num_candidates)
    del join
    info['time_join'] = time.perf_counter() - tic
    tic = time.perf_counter()
    ids = np.empty((n, k), np.int64)
    sims = np.empty((n, k), np.float32)
    for start in range(0, n, SEARCH_CHUNK_ROWS):
        chunk = np.arange(start, min(n, start + SEARCH_CHUNK_ROWS))
        ids[chunk], sims[chunk] = _best(x, chunk, cand[chunk], k)
    del cand
    info['time_rescore'] = time.perf_counter() - tic

    # Refinement: a true neighbour lost by the projection or the join is
    # usually a neighbour of a found neighbour. Each round re-scores,
    # exactly, every row's list together with the first REFINE_FANOUT
    # entries of its first REFINE_FANOUT neighbours' lists. It runs even
    # when the sample already meets the target: the random sample is mostly
    # rows DBSCAN leaves unclustered, while the rows it clusters sit in
    # dense regions, where refinement finds most. Measured at N = 10^5
    # (docs/scaling.md): one round took the sample's recall from 0.985 to
    # 0.988, the clustered rows' to 0.995, and the labels' ARI against
    # the exact ones from 0.91 to 0.99. Rounds stop when one gains less
    # than MIN_REFINE_GAIN on the sample.
    tic = time.perf_counter()
    recall = _recall(ids[rows], exact)
    info['recall_rounds'] = [recall]
    for _ in range(MAX_REFINE_ROUNDS):
        ids, sims = refine(x, ids, sims, REFINE_FANOUT)
        gain = _recall(ids[rows], exact) - recall
        recall += gain
        info['recall_rounds'].append(recall)
        if gain < MIN_REFINE_GAIN:
            break
    info['time_refine'] = time.perf_counter() - tic
    info['sample_recall'] = recall
    _log(f'ivf kNN: N={n}, D={d} -> PCA {pca_dim}, nlist={nlist}, '
         f'nprobe={nprobe} ({info["product_dtype"]}); recall@{k} on '
         f'{len(rows)} sampled rows: ' +
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
        cand[:, 1:][cand[:, 1:] == cand[:, :-1]] = -1  # duplicates
        out_ids[rows], out_sims[rows] = _best(x, rows, cand, k)
    return out_ids, out_sims
