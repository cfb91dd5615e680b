"""k-nearest-neighbour search on L2-normalised embeddings.

Every clustering path starts here: the k-reciprocal Jaccard distance needs each
point's k1 nearest points, the Infomap graph its k1 nearest points and their
cosine similarities.

Neighbour lists follow one rule, whatever the back end, so that every consumer
(the k-reciprocal core, its naive baseline, Infomap) sees the same lists:

* row ``i`` has ``k`` entries and its first entry is ``i`` itself, even when
  other points are exact duplicates of ``i`` (a plain search may return a
  duplicate first, or leave ``i`` out when more than ``k`` points tie);
* the other ``k - 1`` entries are the nearest other points by decreasing
  inner product, equal similarities ordered by increasing index.

Which points win a tie *at the k-th place* is left to the search back end;
faiss and the torch fallback agree exactly except there (and where two float32
inner products computed by different BLAS kernels round differently).

Back ends: faiss's flat search (GPU or CPU), a chunked torch matmul, the
screened exact search of :mod:`.knn_screened`, faiss's approximate HNSW
and the inverted-file search of :mod:`.knn_ivf`. Every function returning
neighbours returns ``(ids, sims)``.
"""
import logging
import warnings
from functools import partial
from typing import Optional, Tuple, Union

import numpy as np
import torch
from mmengine.logging import print_log

from mmcc.utils.checks import check_features, check_int, l2_normalised
from mmcc.utils.device import cpu_has_native_bf16
from .budgets import SIMILARITY_BLOCK_BYTES
from .knn_ivf import ivf_search
from .knn_screened import screened_search

try:  # faiss is optional: the torch fallback covers the exact search.
    import faiss
except ImportError:  # pragma: no cover - exercised by patching in tests
    faiss = None

ArrayLike = Union[np.ndarray, torch.Tensor]

# Below this many points the float32 search is cheap and 'auto' does not
# screen.
_SCREEN_MIN_POINTS = 4096
# Up to N = 4 k every method runs the exact search: the shortcuts would
# save little, and IVF could not train its cells.
_EXACT_UP_TO_POINTS_PER_K = 4

# HNSW graph: links per node, and the candidate-list sizes of construction
# and search (efSearch at least 2 k, so a query keeps more candidates than
# it returns). Larger values raise recall and cost time and memory.
_HNSW_LINKS = 32
_HNSW_EF_CONSTRUCTION = 80
_HNSW_MIN_EF_SEARCH = 64


def as_float32_numpy(features: ArrayLike) -> np.ndarray:
    """Return ``features`` as a C-contiguous float32 array on the CPU.

    Args:
        features: (N, D) array or tensor (any device, any float dtype).

    Returns:
        (N, D) float32 ``np.ndarray`` (no copy when already in that form).
    """
    if isinstance(features, torch.Tensor):
        features = features.detach().to('cpu', torch.float32).numpy()
    return np.ascontiguousarray(features, dtype=np.float32)


def faiss_available() -> bool:
    """Whether faiss can be used (it is an optional dependency)."""
    return faiss is not None


def _faiss_gpu_count() -> int:
    if faiss is None or not hasattr(faiss, 'StandardGpuResources'):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # a CPU build may lack the symbol's back end
        return 0


def _exact_faiss(x: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search with faiss: (N, k) ids, (N, k) sims."""
    if _faiss_gpu_count() > 0:
        try:
            res = faiss.StandardGpuResources()
            index = faiss.GpuIndexFlatIP(res, x.shape[1])
            index.add(x)
            sims, ids = index.search(x, k)
            return ids, sims
        except Exception as err:  # out of GPU memory, broken driver...
            warnings.warn(f'GPU faiss failed ({err}); searching on the CPU')
    if hasattr(faiss, 'knn'):
        # The brute-force kernel IndexFlatIP.search runs, without the index's
        # private copy of the N x D database.
        sims, ids = faiss.knn(x, x, k, metric=faiss.METRIC_INNER_PRODUCT)
        return ids, sims
    index = faiss.IndexFlatIP(x.shape[1])  # pragma: no cover - old faiss
    index.add(x)
    sims, ids = index.search(x, k)
    return ids, sims


def _exact_torch(
    features: ArrayLike,
    k: int,
    rows: Optional[np.ndarray] = None,
    block_bytes: int = SIMILARITY_BLOCK_BYTES
) -> Tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search by chunked matmul + top-k.

    Searches the queries ``features[rows]`` (every row when ``rows`` is
    None) against all of ``features``. Runs on the device of ``features``
    when it is a tensor; peak extra memory is one (chunk, N) similarity
    block of about ``block_bytes``.

    Returns:
        (Q, k) int64 ids and (Q, k) float32 sims, Q the number of queries.
    """
    if isinstance(features, torch.Tensor):
        x = features.detach().float()
    else:
        x = torch.from_numpy(as_float32_numpy(features))
    n = x.shape[0]
    query_rows = None if rows is None else torch.as_tensor(
        rows, device=x.device)
    num_queries = n if rows is None else len(rows)
    chunk = max(1, min(n, block_bytes // (4 * max(n, 1))))
    ids = np.empty((num_queries, k), np.int64)
    sims = np.empty((num_queries, k), np.float32)
    for start in range(0, num_queries, chunk):
        stop = min(num_queries, start + chunk)
        queries = x[start:stop] if rows is None else x[query_rows[start:stop]]
        val, idx = (queries @ x.T).topk(k, dim=1)
        ids[start:stop] = idx.cpu().numpy()
        sims[start:stop] = val.cpu().numpy()
    return ids, sims


def _exact_queries(x: np.ndarray,
                   rows: np.ndarray,
                   k: int,
                   use_faiss: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Exact float32 search for the queries ``x[rows]`` against all of ``x``.

    Returns (len(rows), k) ids and sims, by faiss when available and
    ``use_faiss``, else by :func:`_exact_torch`.
    """
    if use_faiss and faiss is not None and hasattr(faiss, 'knn'):
        sims, ids = faiss.knn(
            np.ascontiguousarray(x[rows]),
            x,
            k,
            metric=faiss.METRIC_INNER_PRODUCT)
        return ids, sims
    return _exact_torch(x, k, rows)


def _approximate_faiss(x: np.ndarray, k: int, method: str,
                       **options) -> Tuple[np.ndarray, np.ndarray]:
    """HNSW or IVF inner-product search (CPU): (N, k) ids and sims."""
    n, dim = x.shape
    if method == 'hnsw':
        index = faiss.IndexHNSWFlat(dim, options.get('hnsw_m', _HNSW_LINKS),
                                    faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = options.get('ef_construction',
                                                _HNSW_EF_CONSTRUCTION)
        index.add(x)
        index.hnsw.efSearch = options.get('ef_search',
                                          max(2 * k, _HNSW_MIN_EF_SEARCH))
        sims, ids = index.search(x, k)
        return ids, sims
    ivf_options = {
        key: options[key]
        for key in ('nlist', 'nprobe', 'pca_dim', 'candidates_per_k',
                    'recall_target', 'calibration_rows', 'max_scan_rows',
                    'product_dtype', 'info') if key in options
    }
    return ivf_search(x, k, **ivf_options)


def canonical_neighbours(features: np.ndarray, ids: np.ndarray,
                         sims: np.ndarray,
                         k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Put every row in the canonical order (self first, see module doc).

    Args:
        features: (N, D) float32 features the search ran on.
        ids: (N, m) int candidate neighbour ids, -1 for missing ones.
        sims: (N, m) their inner products.
        k: Number of entries to keep per row (``k <= m + 1``).

    Returns:
        (N, k) int64 ids and (N, k) float32 similarities; column 0 is the
        point itself with its own inner product.
    """
    n = ids.shape[0]
    rows = np.arange(n)
    ids = ids.astype(np.int64, copy=False)
    sims = sims.astype(np.float32, copy=False)
    # Drop the point itself wherever the search put it, and missing entries.
    valid = (ids >= 0) & (ids != rows[:, None])
    primary = np.where(valid, -sims, np.inf)
    secondary = np.where(valid, ids, np.iinfo(np.int64).max)
    order = np.lexsort((secondary, primary), axis=1)[:, :k - 1]
    others = np.take_along_axis(ids, order, axis=1)
    other_sims = np.take_along_axis(sims, order, axis=1)
    if not np.take_along_axis(valid, order, axis=1).all():
        raise RuntimeError('the search returned fewer than k - 1 neighbours')
    self_sims = np.einsum('nd,nd->n', features, features).astype(np.float32)
    out_ids = np.concatenate([rows[:, None], others], axis=1)
    out_sims = np.concatenate([self_sims[:, None], other_sims], axis=1)
    return out_ids, out_sims


def resolve_knn_method(method: str,
                       features: ArrayLike,
                       backend: str = 'auto') -> str:
    """What ``method='auto'`` stands for with these features, here.

    ``'screened'`` for at least 4,096 CPU features when the CPU multiplies
    bfloat16 natively and no faiss GPU is in use; ``'exact'`` otherwise.
    Any other method is returned as given.
    """
    if method != 'auto':
        return method
    on_gpu = (isinstance(features, torch.Tensor)
              and features.is_cuda) or (backend != 'torch'
                                        and _faiss_gpu_count() > 0)
    if (not on_gpu and len(features) >= _SCREEN_MIN_POINTS
            and cpu_has_native_bf16()):
        return 'screened'
    return 'exact'


def knn_search(features: ArrayLike,
               k: int,
               method: str = 'auto',
               backend: str = 'auto',
               **options) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest points of every point, itself included and first.

    Nearest = largest cosine similarity. Rows are L2-normalised first
    unless every norm is within 1e-3 of 1 already (then the features are
    used as given, so normalised input gives the same lists bit for bit).
    ``k`` is clamped to N with a warning: a set smaller than ``k`` gives
    every point all N points.

    Args:
        features: (N, D) finite features, array or tensor, N >= 1.
        k: Entries per row, the point itself included, >= 1.
        method: ``'auto'`` (default, see :func:`resolve_knn_method`),
            ``'exact'`` (float32 brute force, O(N^2 D) time), ``'screened'``
            (the same result as ``'exact'``, faster on CPUs with native
            bfloat16: a bfloat16 screen, float32 re-scoring and a
            certificate, see :mod:`mmcc.clustering.knn_screened`; option
            ``screen_extra``), ``'hnsw'`` (faiss IndexHNSWFlat, M=32,
            efConstruction=80, efSearch=max(2k, 64)) or ``'ivf'`` (PCA to
            256 dimensions, faiss k-means into 4 sqrt(N) cells, every
            cell joined with the nprobe cells nearest to it, nprobe
            calibrated on a sample to recall@k >= 0.97 within a cost cap,
            exact re-scoring of 4k candidates, refinement; see
            :mod:`.knn_ivf`).
            Approximate methods trade recall for speed and pay off only for
            large N (measured recall and times: ``docs/benchmarks.md``).
            Lost neighbours shrink the k-reciprocal sets, so the Jaccard
            distances and the clusters change: keep an exact method unless
            N makes it too slow.
            Options: ``hnsw_m``, ``ef_construction``, ``ef_search``;
            ``nlist``, ``nprobe``, ``pca_dim``, ``candidates_per_k``,
            ``recall_target``, ``calibration_rows``, ``max_scan_rows``,
            ``product_dtype``, ``info`` (a dict
            that receives the chosen settings and measured recall), as in
            :func:`mmcc.clustering.knn_ivf.ivf_search`.
        backend: ``'auto'`` (faiss when importable: GPU faiss when
            ``faiss.get_num_gpus() > 0``, else CPU), ``'faiss'`` or
            ``'torch'`` (chunked matmul on the features' device, exact
            only). ``'screened'`` always screens with torch on the CPU and
            uses the back end for the rows it cannot certify.

    Returns:
        tuple: ``(ids, sims)``, (N, k) int64 neighbour ids and (N, k) float32
        inner products of the normalised rows, ordered as described in the
        module docstring (``ids[:, 0] == arange(N)``).

    Raises:
        ValueError: ``features`` not (N, D) with N >= 1, or with NaN/Inf
            values or a row of norm 0; ``k`` < 1; unknown method/backend.
    """
    if method not in ('auto', 'exact', 'screened', 'hnsw', 'ivf'):
        raise ValueError(f'unknown kNN method {method!r}')
    if backend not in ('auto', 'faiss', 'torch'):
        raise ValueError(f'unknown kNN backend {backend!r}')
    k = check_int(k, 'k')
    if not isinstance(features, torch.Tensor):
        features = as_float32_numpy(features)
    check_features(features)
    features = l2_normalised(features)
    method = resolve_knn_method(method, features, backend)
    x = as_float32_numpy(features)
    n = x.shape[0]
    if k > n:
        print_log(
            f'knn_search: k={k} is more than the N={n} points; using k={n} '
            '(every list holds every point)',
            logger='current',
            level=logging.WARNING)
        k = n
    use_faiss = backend == 'faiss' or (backend == 'auto' and faiss_available())
    if use_faiss and not faiss_available():
        raise ImportError('backend="faiss" needs the faiss package')
    if method in ('hnsw', 'ivf') and not use_faiss:
        warnings.warn(f'kNN method {method!r} needs faiss; using exact search')
        method = 'exact'
    if method != 'exact' and n <= _EXACT_UP_TO_POINTS_PER_K * k:
        method = 'exact'
    if method == 'screened':
        ids, sims, _ = screened_search(
            x,
            k,
            partial(_exact_queries, use_faiss=use_faiss),
            extra=options.get('screen_extra'))
    elif not use_faiss:
        ids, sims = _exact_torch(features, k)
    elif method == 'exact':
        ids, sims = _exact_faiss(x, k)
    else:
        ids, sims = _approximate_faiss(x, k, method, **options)
        rows = np.arange(n)[:, None]
        short = ((ids >= 0) & (ids != rows)).sum(1) < k - 1
        if short.any():  # too few hits in the probed cells: fill exactly
            ids, sims = ids.copy(), sims.copy()
            ids[short], sims[short] = _exact_queries(x, np.flatnonzero(short),
                                                     k)
    return canonical_neighbours(x, ids, sims, k)
