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
_TORCH_BLOCK_BYTES = 32 * 2**20
# Bytes of the (rows, m, D) candidate features re-scored at once.
_GATHER_BYTES = 16 * 2**20


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
                 rows: Optional[np.ndarray] = None,
                 block_bytes: int = _TORCH_BLOCK_BYTES
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search by chunked matmul + top-k.

    Searches the queries ``features[rows]`` (every row when ``rows`` is
    None) against all of ``features``. Runs on the device of ``features``
    when it is a tensor; peak extra memory is one (chunk, N) similarity
    block of about ``block_bytes``.

    Returns:
        (Q, k) float32 sims and (Q, k) int64 ids, Q the number of queries.
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
    sims = np.empty((num_queries, k), np.float32)
    ids = np.empty((num_queries, k), np.int64)
    for start in range(0, num_queries, chunk):
        stop = min(num_queries, start + chunk)
        queries = x[start:stop] if rows is None else x[query_rows[start:stop]]
        val, idx = (queries @ x.T).topk(k, dim=1)
        sims[start:stop] = val.cpu().numpy()
        ids[start:stop] = idx.cpu().numpy()
    return sims, ids


# bfloat16's unit roundoff (8-bit significand, round to nearest even).
_BF16_UNIT = 2.0**-8


def screen_error_bound(x: torch.Tensor, xb: torch.Tensor
                       ) -> Tuple[torch.Tensor, float]:
    """How far a bfloat16 screen score can be from the float32 product.

    The screen multiplies ``xb`` (``x`` rounded to bfloat16), accumulates in
    float32 and rounds the result to bfloat16. For every pair (i, j)::

        |screen_ij - <x_i, x_j>| <= base_i + rel * |screen_ij|

    from three rigorous terms: the inputs' rounding, by Cauchy-Schwarz on
    the measured rounding errors ``e = x - xb`` (|<xb_i, e_j>| +
    |<e_i, x_j>|, with the largest norms over j); the float32 accumulation of
    D exact bf16 products (gamma_D |xb_i| |xb_j|); the output's rounding to
    bfloat16 (``rel = u / (1 - u)``, u = 2^-8). Plus 1e-6 of slack for
    subnormal inputs, which bfloat16 kernels may flush to zero. At D = 2,048
    on unit rows the base is about 0.005, against 0.008 from the coarser
    ``2u |x_i| |x_j|`` input bound.

    Args:
        x: (N, D) float32 features.
        xb: (N, D) ``x`` in bfloat16.

    Returns:
        ``(base, rel)``: (N,) float32 tensor and a float.
    """
    n, dim = x.shape
    norms, rounded_norms, error_norms = torch.empty(3, n)
    # Chunks through preallocated buffers: temporaries freed between
    # small kept results would fragment the heap (measured: +0.5 GB RSS).
    step = min(n, 256)
    rounded, error = torch.empty(step, dim), torch.empty(step, dim)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        rows = hi - lo
        rounded[:rows].copy_(xb[lo:hi])
        torch.sub(x[lo:hi], rounded[:rows], out=error[:rows])
        torch.linalg.vector_norm(x[lo:hi], dim=1, out=norms[lo:hi])
        torch.linalg.vector_norm(rounded[:rows], dim=1,
                                 out=rounded_norms[lo:hi])
        torch.linalg.vector_norm(error[:rows], dim=1, out=error_norms[lo:hi])
    gamma = dim * 2.0**-24 / (1 - dim * 2.0**-24)
    base = (rounded_norms * error_norms.max() + error_norms * norms.max() +
            gamma * rounded_norms * rounded_norms.max()) * (1 + 1e-6) + 1e-6
    return base, _BF16_UNIT / (1 - _BF16_UNIT)


def _merge_top(values: torch.Tensor, ids: torch.Tensor, scores: torch.Tensor,
               first_column: int) -> None:
    """Fold a block of scores into running top-m lists, in place.

    Args:
        values: (R, m) float32 running best scores, descending.
        ids: (R, m) int64 their column ids.
        scores: (R, C) scores of the same R rows against columns
            ``first_column .. first_column + C - 1``.
    """
    m = values.shape[1]
    step = 2048  # rows at a time: bounded temporaries
    for lo in range(0, scores.shape[0], step):
        top, cols = scores[lo:lo + step].topk(min(m, scores.shape[1]), dim=1)
        merged = torch.cat([values[lo:lo + step], top.float()], dim=1)
        merged_ids = torch.cat([ids[lo:lo + step], cols + first_column],
                               dim=1)
        best, pos = merged.topk(m, dim=1)
        values[lo:lo + step] = best
        ids[lo:lo + step] = merged_ids.gather(1, pos)


def bf16_screen(xb: torch.Tensor, m: int, block_bytes: int = _TORCH_BLOCK_BYTES
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The m other points of largest bfloat16 inner product, for every point.

    The product is symmetric, so only the panels on and above the diagonal
    are computed (about half of the N x N product): panel ``I`` holds the
    rows ``I`` against every column from ``I``'s first on; it gives the
    rows of ``I`` their candidates among those columns, and its transpose
    gives every later row its candidates among the columns ``I``.

    Args:
        xb: (N, D) bfloat16 features, N > m.
        m: Candidates per row (the point itself is never one).
        block_bytes: Bytes of one (rows, N) bfloat16 panel.

    Returns:
        (N, m) float32 screen scores, descending, and (N, m) int64 ids.
    """
    n = xb.shape[0]
    values = torch.full((n, m), -float('inf'))
    ids = torch.zeros((n, m), dtype=torch.long)
    rows = max(1, min(n, block_bytes // (2 * n)))
    # Two reused buffers: panels of shrinking size allocated afresh would
    # fragment the heap and hold on to several times their size.
    panel_buffer = torch.empty(rows * n, dtype=xb.dtype)
    transposed_buffer = torch.empty(rows * n, dtype=xb.dtype)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        height, width = stop - start, n - start
        panel = panel_buffer[:height * width].view(height, width)
        torch.mm(xb[start:stop], xb[start:].T, out=panel)
        diagonal = torch.arange(height)
        panel[diagonal, diagonal] = -float('inf')  # the point itself
        _merge_top(values[start:stop], ids[start:stop], panel, start)
        if stop < n:
            transposed = transposed_buffer[:(n - stop) * height].view(
                n - stop, height)
            transposed.copy_(panel[:, height:].T)
            _merge_top(values[stop:], ids[stop:], transposed, start)
    return values, ids


def rescore(x: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Float32 inner products of every row with its candidates.

    Args:
        x: (N, D) float32 features.
        ids: (N, m) int64 candidate ids, all valid.

    Returns:
        (N, m) float32, ``out[i, j] = <x[i], x[ids[i, j]]>``.
    """
    n, m = ids.shape
    out = np.empty((n, m), np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if faiss is not None and hasattr(faiss, 'fvec_inner_products_by_idx'):
        # Why faiss: it reads the candidate rows in place; a torch gather
        # copies (N, m, D) floats first and measured 7x slower here.
        faiss.fvec_inner_products_by_idx(
            faiss.swig_ptr(out), faiss.swig_ptr(x), faiss.swig_ptr(x),
            faiss.swig_ptr(ids), x.shape[1], n, m)
        return out
    xt = torch.from_numpy(x)
    step = max(1, _GATHER_BYTES // (4 * m * x.shape[1]))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        gathered = xt[torch.from_numpy(ids[lo:hi])]  # (rows, m, D)
        out[lo:hi] = torch.bmm(gathered, xt[lo:hi, :, None])[..., 0].numpy()
    return out


def _exact_screened(x: np.ndarray, k: int,
                    block_bytes: int = _TORCH_BLOCK_BYTES,
                    extra: Optional[int] = None,
                    fallback=None) -> Tuple[np.ndarray, np.ndarray, int]:
    """Exact search: a bfloat16 screen, float32 re-scoring, a certificate.

    Why: the brute-force search is a (N, D) x (D, N) product, and on CPUs
    with AVX512-BF16 or AMX a bfloat16 product runs at 2-4 times the float32
    rate (measured 3x here, 2 cores with AVX512-BF16); the screen also
    computes only half of the symmetric product (:func:`bf16_screen`). The
    screen's error is bounded (:func:`screen_error_bound`), so exactness is
    kept by:

    1. screening, for every row, the ``m = k - 1 + extra`` other points of
       largest bfloat16 inner product (the point itself is left out);
    2. re-scoring those m candidates in float32 (:func:`rescore`);
    3. certifying the row when its (k-1)-th best float32 score exceeds the
       m-th screen score plus the bound: no point outside the candidates can
       then reach the (k-1) best. Rows not certified (points packed closer
       than the screen can tell apart, e.g. many duplicates) are searched
       again in float32 by ``fallback``.

    Args:
        x: (N, D) float32 features, N >= 2.
        k: Entries per row, the point itself included (k <= N).
        block_bytes: Bytes of one (rows, N) bfloat16 screen panel.
        extra: Candidates screened beyond the k - 1 needed (default 32).
        fallback: ``f(x, rows, k) -> (sims, ids)``, the float32 search for
            the queries ``x[rows]`` (default: faiss when available, else a
            float32 matmul).

    Returns:
        ``(sims, ids, num_fallback)``: (N, m + 1) float32 scores and int64
        ids (-1: no entry) of candidate lists ready for
        :func:`canonical_neighbours`, and how many rows needed the float32
        search.
    """
    n = x.shape[0]
    m = min(n - 1, k - 1 + (32 if extra is None else extra))
    xt = torch.from_numpy(x)
    xb = xt.to(torch.bfloat16)
    base, rel = screen_error_bound(xt, xb)
    screen, cand = bf16_screen(xb, m, block_bytes)
    del xb
    threshold = screen[:, -1]  # no other point screened above it
    # Largest float32 product a point outside the candidates can have.
    reach = (threshold + base + rel * threshold.abs()).numpy()
    cand = cand.numpy()
    exact = rescore(x, cand)
    # One spare column: the float32 fallback returns the point itself too.
    ids = np.full((n, m + 1), -1, np.int64)
    sims = np.full((n, m + 1), -np.inf, np.float32)
    ids[:, :m], sims[:, :m] = cand, exact
    # Certain without a check: k = 1 (the point alone) or every other point
    # a candidate.
    if 1 < k and m < n - 1:
        kth = -np.partition(-exact, k - 2, axis=1)[:, k - 2]
        redo = np.flatnonzero(kth <= reach)
    else:
        redo = np.zeros(0, np.int64)
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
            fallback=None if use_faiss else
            lambda x, rows, k: _exact_torch(x, k, rows))
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
    :func:`_exact_torch`.
    """
    if faiss is not None and hasattr(faiss, 'knn'):
        return faiss.knn(np.ascontiguousarray(x[rows]), x, k,
                         metric=faiss.METRIC_INNER_PRODUCT)
    return _exact_torch(x, k, rows)
