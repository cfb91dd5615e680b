"""k-nearest-neighbour search on L2-normalised embeddings.

Every clustering path starts here: the k-reciprocal Jaccard distance needs each
point's k1 nearest points, the Infomap graph its k1 nearest points and their
cosine similarities.

Neighbour lists follow one rule, whatever the back end, so that every consumer
(dense and sparse Jaccard, Infomap) sees the same lists:

* row ``i`` has ``k`` entries and its first entry is ``i`` itself, even when
  other points are exact duplicates of ``i`` (a plain search may return a
  duplicate first, or leave ``i`` out when more than ``k`` points tie);
* the other ``k - 1`` entries are the nearest other points by decreasing
  inner product, equal similarities ordered by increasing index.

Which points win a tie *at the k-th place* is left to the search back end;
faiss and the torch fallback agree exactly except there (and where two float32
inner products computed by different BLAS kernels round differently).
"""
import math
import warnings
from typing import Optional, Tuple, Union

import numpy as np
import torch

try:  # faiss is optional: the torch fallback covers the exact search.
    import faiss
except ImportError:  # pragma: no cover - exercised by patching in tests
    faiss = None

ArrayLike = Union[np.ndarray, torch.Tensor]

# Bytes of the (chunk, N) similarity block of the torch fallback.
_TORCH_BLOCK_BYTES = 256 * 2**20
# Bytes of the (rows, m, D) candidate features re-scored at once.
_GATHER_BYTES = 64 * 2**20


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
    """Exact inner-product search with faiss: (N, k) sims, (N, k) ids."""
    if _faiss_gpu_count() > 0:
        try:
            res = faiss.StandardGpuResources()
            index = faiss.GpuIndexFlatIP(res, x.shape[1])
            index.add(x)
            return index.search(x, k)
        except Exception as err:  # out of GPU memory, broken driver...
            warnings.warn(f'GPU faiss failed ({err}); searching on the CPU')
    if hasattr(faiss, 'knn'):
        # The brute-force kernel IndexFlatIP.search runs, without the index's
        # private copy of the N x D database.
        return faiss.knn(x, x, k, metric=faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexFlatIP(x.shape[1])  # pragma: no cover - old faiss
    index.add(x)
    return index.search(x, k)


def _exact_torch(features: ArrayLike, k: int,
                 block_bytes: int = _TORCH_BLOCK_BYTES
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search by chunked matmul + top-k.

    Runs on the device of ``features`` when it is a tensor; peak extra memory
    is one (chunk, N) similarity block of about ``block_bytes``.
    """
    if isinstance(features, torch.Tensor):
        x = features.detach().float()
    else:
        x = torch.from_numpy(as_float32_numpy(features))
    n = x.shape[0]
    chunk = max(1, min(n, block_bytes // (4 * max(n, 1))))
    sims = np.empty((n, k), np.float32)
    ids = np.empty((n, k), np.int64)
    for start in range(0, n, chunk):
        block = x[start:start + chunk] @ x.T
        val, idx = block.topk(k, dim=1)
        sims[start:start + chunk] = val.cpu().numpy()
        ids[start:start + chunk] = idx.cpu().numpy()
    return sims, ids


def screen_error_bound(dim: int) -> float:
    """Bound on ``|bf16 screen - exact|`` per unit of ``|q| |x|``.

    The screen rounds both (D,) operands to bfloat16 (unit roundoff
    u = 2^-8: each product is off by at most (2u + u^2) |q_i x_i|, and
    sum_i |q_i x_i| <= |q| |x|), accumulates the D products in float32
    (gamma_D = D 2^-24 / (1 - D 2^-24) of the absolute sum) and rounds the
    result to bfloat16 (u again). About 0.0119 |q| |x| at D = 2,048.
    """
    u = 2.0**-8
    gamma = dim * 2.0**-24 / (1 - dim * 2.0**-24)
    products = 2 * u + u * u
    accumulated = products + gamma * (1 + u)**2
    return accumulated + u * (1 + accumulated)


def _exact_screened(x: np.ndarray, k: int,
                    block_bytes: int = _TORCH_BLOCK_BYTES,
                    extra: Optional[int] = None,
                    fallback=None) -> Tuple[np.ndarray, np.ndarray, int]:
    """Exact search: a bfloat16 screen, float32 re-scoring, a certificate.

    Why: the brute-force search is a (N, D) x (D, N) product, and on CPUs
    with AVX512-BF16 or AMX a bfloat16 product runs at 2-4 times the float32
    rate (measured 2.3x here, 2 cores with AVX512-BF16). The screen's error
    is bounded (:func:`screen_error_bound`), so exactness is kept by:

    1. screening, for every row, the ``m = k - 1 + extra`` other points of
       largest bfloat16 inner product (the point itself is left out);
    2. re-scoring those m candidates in float32;
    3. certifying the row when its (k-1)-th best float32 score exceeds the
       m-th screen score plus the bound: no point outside the candidates can
       then reach the (k-1) best. Rows not certified (points packed closer
       than the screen can tell apart, e.g. many duplicates) are searched
       again in float32 by ``fallback``.

    Args:
        x: (N, D) float32 features, N >= 2.
        k: Entries per row, the point itself included (k <= N).
        block_bytes: Bytes of one (rows, N) bfloat16 screen block.
        extra: Candidates screened beyond the k - 1 needed (default
            max(16, k)).
        fallback: ``f(x, rows, k) -> (sims, ids)``, the float32 search for
            the queries ``x[rows]`` (default: faiss when available, else a
            float32 matmul).

    Returns:
        ``(sims, ids, num_fallback)``: (N, m) float32 scores and int64 ids of
        candidate lists ready for :func:`canonical_neighbours`, and how many
        rows needed the float32 search.
    """
    n, dim = x.shape
    m = min(n - 1, k - 1 + (max(16, k) if extra is None else extra))
    xt = torch.from_numpy(x)
    norms = xt.norm(dim=1)
    bound = screen_error_bound(dim) * norms * norms.max()
    xb = xt.to(torch.bfloat16)
    chunk = max(1, min(n, block_bytes // (2 * n)))
    # Rows per float32 re-scoring step: (rows, m, D) gathered candidates.
    sub = max(1, _GATHER_BYTES // (4 * m * dim))
    # One spare column: the float32 fallback returns the point itself too.
    ids = np.full((n, m + 1), -1, np.int64)
    sims = np.full((n, m + 1), -np.inf, np.float32)
    uncertain = np.zeros(n, bool)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = torch.arange(start, stop)
        block = xb[start:stop] @ xb.T
        block[rows - start, rows] = -float('inf')  # the point itself
        screen, cand = block.topk(m, dim=1)
        del block
        exact = torch.cat([
            torch.einsum('rd,rmd->rm', xt[lo:min(lo + sub, stop)],
                         xt[cand[lo - start:lo - start + sub]])
            for lo in range(start, stop, sub)
        ])
        ids[start:stop, :m] = cand.numpy()
        sims[start:stop, :m] = exact.numpy()
        # Certain without a check: k = 1 (the point alone) or every other
        # point a candidate.
        if 1 < k and m < n - 1:
            kth = exact.topk(k - 1, dim=1).values[:, -1]
            threshold = screen[:, -1].float() + bound[start:stop]
            uncertain[start:stop] = (kth <= threshold).numpy()
    redo = np.flatnonzero(uncertain)
    if len(redo):
        redo_sims, redo_ids = (fallback or _exact_queries)(x, redo, m + 1)
        sims[redo], ids[redo] = redo_sims, redo_ids
    return sims, ids, len(redo)


def _approximate_faiss(x: np.ndarray, k: int, method: str,
                       **options) -> Tuple[np.ndarray, np.ndarray]:
    """HNSW or IVF-Flat inner-product search (CPU)."""
    n, dim = x.shape
    if method == 'hnsw':
        index = faiss.IndexHNSWFlat(dim, options.get('hnsw_m', 32),
                                    faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = options.get('ef_construction', 80)
        index.add(x)
        index.hnsw.efSearch = options.get('ef_search', max(2 * k, 64))
        return index.search(x, k)
    # IVF: cells from k-means on (a sample of) the data, search nprobe cells.
    nlist = options.get('nlist') or max(1, min(int(4 * math.sqrt(n)), n // 39))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist,
                               faiss.METRIC_INNER_PRODUCT)
    sample = x
    if n > 64 * nlist:
        rng = np.random.default_rng(0)
        sample = x[np.sort(rng.choice(n, 64 * nlist, replace=False))]
    index.train(sample)
    index.add(x)
    index.nprobe = options.get('nprobe') or max(1, nlist // 16)
    return index.search(x, k)


def canonical_neighbours(features: np.ndarray, ids: np.ndarray,
                         sims: np.ndarray, k: int
                         ) -> Tuple[np.ndarray, np.ndarray]:
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


def bf16_matmul_is_fast() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX).

    Without them the bfloat16 product is emulated and no faster than
    float32, so ``method='auto'`` keeps the float32 search.
    """
    cpu = getattr(torch, 'cpu', None)
    checks = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
    try:
        return any(getattr(cpu, name)() for name in checks
                   if hasattr(cpu, name))
    except Exception:  # private helpers: absent or failing means "no"
        return False


# Below this many points the float32 search takes well under a second and
# 'auto' does not screen.
_SCREEN_MIN_POINTS = 4096


def resolve_knn_method(method: str, features: ArrayLike,
                       backend: str = 'auto') -> str:
    """What ``method='auto'`` stands for with these features, here.

    ``'screened'`` for at least 4,096 CPU features when the CPU multiplies
    bfloat16 natively and no faiss GPU is in use; ``'exact'`` otherwise.
    Any other method is returned as given.
    """
    if method != 'auto':
        return method
    on_gpu = (isinstance(features, torch.Tensor) and features.is_cuda) or (
        backend != 'torch' and _faiss_gpu_count() > 0)
    if (not on_gpu and len(features) >= _SCREEN_MIN_POINTS
            and bf16_matmul_is_fast()):
        return 'screened'
    return 'exact'


def knn_search(features: ArrayLike,
               k: int,
               method: str = 'auto',
               backend: str = 'auto',
               **options) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest points of every point, itself included and first.

    Nearest = largest inner product, i.e. cosine similarity for L2-normalised
    rows (features are used as given, not re-normalised). ``k`` is clamped to
    N, so a set smaller than ``k`` gives every point all N points.

    Args:
        features: (N, D) L2-normalised features, array or tensor.
        k: Entries per row, the point itself included.
        method: ``'auto'`` (default, see :func:`resolve_knn_method`),
            ``'exact'`` (float32 brute force), ``'screened'`` (the same
            result as ``'exact'``, faster on CPUs with native bfloat16: a
            bfloat16 screen, float32 re-scoring and a certificate, see
            :func:`_exact_screened`; option ``screen_extra``), ``'hnsw'``
            (faiss IndexHNSWFlat, M=32, efConstruction=80,
            efSearch=max(2k, 64)) or ``'ivf'`` (faiss IndexIVFFlat,
            nlist=4 sqrt(N), nprobe=nlist/16).
            Approximate methods trade recall for speed. Measured on the
            benchmark's synthetic embeddings (N=32,621, D=2,048, k=30,
            ``benchmark_pseudo_labels.py --knn-recall``, 2 shared CPU cores):
            recall@30 (fraction of the exact lists' entries found) 0.960
            for hnsw, 0.971 for ivf, with no gain in time at that size
            (exact 79 s, hnsw 119 s as its graph construction dominates,
            ivf 67 s); they pay off only for much larger N. Lost
            neighbours shrink the k-reciprocal sets, so the Jaccard
            distances and the clusters change: keep an exact method unless
            N makes it too slow.
            Options: ``hnsw_m``, ``ef_construction``, ``ef_search``,
            ``nlist``, ``nprobe``.
        backend: ``'auto'`` (faiss when importable: GPU faiss when
            ``faiss.get_num_gpus() > 0``, else CPU), ``'faiss'`` or
            ``'torch'`` (chunked matmul on the features' device, exact
            only). ``'screened'`` always screens with torch on the CPU and
            uses the back end for the rows it cannot certify.

    Returns:
        tuple: ``(ids, sims)``, (N, k) int64 neighbour ids and (N, k) float32
        inner products, ordered as described in the module docstring
        (``ids[:, 0] == arange(N)``).
    """
    if method not in ('auto', 'exact', 'screened', 'hnsw', 'ivf'):
        raise ValueError(f'unknown kNN method {method!r}')
    if backend not in ('auto', 'faiss', 'torch'):
        raise ValueError(f'unknown kNN backend {backend!r}')
    method = resolve_knn_method(method, features, backend)
    x = as_float32_numpy(features)
    n = x.shape[0]
    k = int(min(k, n))
    if n == 0 or k <= 0:
        return (np.zeros((n, max(k, 0)), np.int64),
                np.zeros((n, max(k, 0)), np.float32))
    use_faiss = backend == 'faiss' or (backend == 'auto' and faiss_available())
    if use_faiss and not faiss_available():
        raise ImportError('backend="faiss" needs the faiss package')
    if method in ('hnsw', 'ivf') and not use_faiss:
        warnings.warn(f'kNN method {method!r} needs faiss; using exact search')
        method = 'exact'
    if method != 'exact' and n <= 4 * k:
        method = 'exact'  # nothing to gain, and IVF cannot train
    if method == 'screened':
        sims, ids, _ = _exact_screened(
            x, k, extra=options.get('screen_extra'),
            fallback=None if use_faiss else _exact_queries_torch)
    elif not use_faiss:
        sims, ids = _exact_torch(features, k)
    elif method == 'exact':
        sims, ids = _exact_faiss(x, k)
    else:
        sims, ids = _approximate_faiss(x, k, method, **options)
        rows = np.arange(n)[:, None]
        short = ((ids >= 0) & (ids != rows)).sum(1) < k - 1
        if short.any():  # too few hits in the probed cells: fill exactly
            sims, ids = sims.copy(), ids.copy()
            exact_sims, exact_ids = _exact_queries(x, np.flatnonzero(short), k)
            sims[short], ids[short] = exact_sims, exact_ids
    return canonical_neighbours(x, ids, sims, k)


def _exact_queries(x: np.ndarray, rows: np.ndarray,
                   k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Exact float32 search for the queries ``x[rows]`` against all of ``x``.

    Returns (len(rows), k) sims and ids, by faiss when available, else by
    :func:`_exact_queries_torch`.
    """
    if faiss is not None and hasattr(faiss, 'knn'):
        return faiss.knn(np.ascontiguousarray(x[rows]), x, k,
                         metric=faiss.METRIC_INNER_PRODUCT)
    return _exact_queries_torch(x, rows, k)


def _exact_queries_torch(x: np.ndarray, rows: np.ndarray,
                         k: int) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`_exact_queries` by chunked matmul (one (chunk, N) block)."""
    base = torch.from_numpy(x)
    chunk = max(1, _TORCH_BLOCK_BYTES // (4 * x.shape[0]))
    sims, ids = [], []
    for start in range(0, len(rows), chunk):
        queries = base[torch.from_numpy(rows[start:start + chunk])]
        val, idx = (queries @ base.T).topk(k, dim=1)
        sims.append(val.numpy())
        ids.append(idx.numpy())
    return np.concatenate(sims), np.concatenate(ids)
