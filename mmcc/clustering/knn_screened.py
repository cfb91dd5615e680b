"""Exact kNN search through a bfloat16 screen, with a certificate.

The brute-force search is an (N, D) x (D, N) product. On CPUs with
AVX512-BF16 or AMX a bfloat16 product runs at a multiple of the float32 rate
(figures in ``docs/benchmarks.md``), and the screen computes only half of
the symmetric product (:func:`symmetric_screen`). Its error is bounded
(:func:`screen_error_bound`), which keeps the result exact:

1. screen, for every row, the ``m = k - 1 + extra`` other points of largest
   bfloat16 inner product (the point itself is left out);
2. re-score those m candidates in float32 (:func:`rescore`);
3. certify the row when its (k-1)-th best float32 score exceeds the m-th
   screen score plus the bound: no point outside the candidates can then
   reach the (k - 1) best. Rows not certified (points packed closer than
   the screen can tell apart, e.g. many duplicates) are searched again in
   float32 by the caller's exact search.

:func:`screened_search` runs the three steps;
:func:`mmcc.clustering.knn_search` calls it for ``method='screened'`` and
puts its lists in canonical order. Every function returning neighbours
returns ``(ids, scores)``.
"""
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from .budgets import FEATURE_GATHER_BYTES, SIMILARITY_BLOCK_BYTES

try:  # faiss is optional: re-scoring falls back to a torch gather.
    import faiss
except ImportError:  # pragma: no cover - exercised by patching in tests
    faiss = None

# bfloat16's unit roundoff (8-bit significand, round to nearest even).
_BF16_UNIT = 2.0**-8
# Candidates screened beyond the k - 1 needed. A row is certified when its
# m-th screen score lies below its (k-1)-th float32 score by more than the
# screen's error; spare ranks make that margin likely, and a row that still
# fails is searched again, so this trades screen work against fallbacks and
# never affects exactness.
_SCREEN_EXTRA = 32
# Rows per step of the error bound's norms, through two preallocated
# (rows, D) buffers: temporaries freed between small kept results would
# fragment the heap and hold on to memory.
_NORM_CHUNK_ROWS = 256
# Rows per step when folding a screen panel into the running top-m lists:
# bounds the (rows, 2 m) merge temporaries.
_MERGE_ROWS = 2048

# (queries x[rows], k) -> (ids, sims), the float32 search of rows the
# screen cannot certify.
ExactSearch = Callable[[np.ndarray, np.ndarray, int], Tuple[np.ndarray,
                                                            np.ndarray]]


def screen_error_bound(x: torch.Tensor,
                       xb: torch.Tensor) -> Tuple[torch.Tensor, float]:
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
    step = min(n, _NORM_CHUNK_ROWS)
    rounded, error = torch.empty(step, dim), torch.empty(step, dim)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        rows = hi - lo
        rounded[:rows].copy_(xb[lo:hi])
        torch.sub(x[lo:hi], rounded[:rows], out=error[:rows])
        torch.linalg.vector_norm(x[lo:hi], dim=1, out=norms[lo:hi])
        torch.linalg.vector_norm(
            rounded[:rows], dim=1, out=rounded_norms[lo:hi])
        torch.linalg.vector_norm(error[:rows], dim=1, out=error_norms[lo:hi])
    gamma = dim * 2.0**-24 / (1 - dim * 2.0**-24)
    base = (rounded_norms * error_norms.max() + error_norms * norms.max() +
            gamma * rounded_norms * rounded_norms.max()) * (1 + 1e-6) + 1e-6
    return base, _BF16_UNIT / (1 - _BF16_UNIT)


def _merge_top(ids: torch.Tensor, values: torch.Tensor, scores: torch.Tensor,
               first_column: int) -> None:
    """Fold a block of scores into running top-m lists, in place.

    Args:
        ids: (R, m) int64 running column ids.
        values: (R, m) float32 their scores, descending.
        scores: (R, C) scores of the same R rows against columns
            ``first_column .. first_column + C - 1``.
    """
    m = values.shape[1]
    for lo in range(0, scores.shape[0], _MERGE_ROWS):
        hi = lo + _MERGE_ROWS
        top, cols = scores[lo:hi].topk(min(m, scores.shape[1]), dim=1)
        merged = torch.cat([values[lo:hi], top.float()], dim=1)
        merged_ids = torch.cat([ids[lo:hi], cols + first_column], dim=1)
        best, pos = merged.topk(m, dim=1)
        values[lo:hi] = best
        ids[lo:hi] = merged_ids.gather(1, pos)


def symmetric_screen(
    z: torch.Tensor,
    m: int,
    block_bytes: int = SIMILARITY_BLOCK_BYTES
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The m other points of largest inner product, for every point.

    Used with bfloat16 rows by :func:`screened_search`; any dtype that
    ``torch.mm`` multiplies works (the float32 screen candidates of
    ``tools/analysis_tools/benchmark_knn_screen.py`` use it too).

    The product is symmetric, so only the panels on and above the diagonal
    are computed (about half of the N x N product): panel ``I`` holds the
    rows ``I`` against every column from ``I``'s first on; it gives the
    rows of ``I`` their candidates among those columns, and its transpose
    gives every later row its candidates among the columns ``I``.

    Args:
        z: (N, E) rows, N > m.
        m: Candidates per row (the point itself is never one).
        block_bytes: Bytes of one (rows, N) panel in ``z``'s dtype.

    Returns:
        (N, m) int64 ids and (N, m) float32 screen scores, descending.
    """
    n = z.shape[0]
    ids = torch.zeros((n, m), dtype=torch.long)
    values = torch.full((n, m), -float('inf'))
    rows = max(1, min(n, block_bytes // (z.element_size() * n)))
    # Two reused buffers: panels of shrinking size allocated afresh would
    # fragment the heap and hold on to several times their size.
    panel_buffer = torch.empty(rows * n, dtype=z.dtype)
    transposed_buffer = torch.empty(rows * n, dtype=z.dtype)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        height, width = stop - start, n - start
        panel = panel_buffer[:height * width].view(height, width)
        torch.mm(z[start:stop], z[start:].T, out=panel)
        diagonal = torch.arange(height)
        panel[diagonal, diagonal] = -float('inf')  # the point itself
        _merge_top(ids[start:stop], values[start:stop], panel, start)
        if stop < n:
            transposed = transposed_buffer[:(n - stop) * height].view(
                n - stop, height)
            transposed.copy_(panel[:, height:].T)
            _merge_top(ids[stop:], values[stop:], transposed, start)
    return ids, values


def rescore(x: np.ndarray,
            ids: np.ndarray,
            gather_bytes: int = FEATURE_GATHER_BYTES,
            queries: Optional[np.ndarray] = None) -> np.ndarray:
    """Float32 inner products of every query with its candidates.

    Args:
        x: (N, D) float32 features.
        ids: (Q, m) int64 candidate ids (rows of ``x``), all valid.
        gather_bytes: Bytes of the (rows, m, D) gathered candidates of the
            torch path (used without faiss).
        queries: (Q, D) float32 C-contiguous queries; defaults to the first
            Q rows of ``x``.

    Returns:
        (Q, m) float32, ``out[i, j] = <queries[i], x[ids[i, j]]>``.
    """
    n, m = ids.shape
    if queries is None:
        queries = x[:n]
    out = np.empty((n, m), np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if faiss is not None and hasattr(faiss, 'fvec_inner_products_by_idx'):
        # faiss reads the candidate rows in place, where the torch path
        # first copies them, (rows, m, D) floats per step.
        faiss.fvec_inner_products_by_idx(
            faiss.swig_ptr(out), faiss.swig_ptr(queries), faiss.swig_ptr(x),
            faiss.swig_ptr(ids), x.shape[1], n, m)
        return out
    xt, qt = torch.from_numpy(x), torch.from_numpy(queries)
    step = max(1, gather_bytes // (4 * m * x.shape[1]))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        gathered = xt[torch.from_numpy(ids[lo:hi])]  # (rows, m, D)
        out[lo:hi] = torch.bmm(gathered, qt[lo:hi, :, None])[..., 0].numpy()
    return out


def screened_search(
    x: np.ndarray,
    k: int,
    fallback: ExactSearch,
    extra: Optional[int] = None,
    block_bytes: int = SIMILARITY_BLOCK_BYTES,
    gather_bytes: int = FEATURE_GATHER_BYTES
) -> Tuple[np.ndarray, np.ndarray, int]:
    """Exact search: a bfloat16 screen, float32 re-scoring, a certificate.

    The three steps of the module docstring. Time: the screen is half of an
    N x N x D bfloat16 product, the re-scoring N m D float32 operations,
    the fallback a float32 search of the rows it cannot certify. Memory:
    (N, m) lists plus one screen panel of ``block_bytes``.

    Args:
        x: (N, D) float32 features, N >= 2.
        k: Entries per row, the point itself included (k <= N).
        fallback: ``f(x, rows, k) -> (ids, sims)``, the float32 search of
            the queries ``x[rows]`` against all of ``x``.
        extra: Candidates screened beyond the k - 1 needed (default 32).
        block_bytes: Bytes of one (rows, N) bfloat16 screen panel.
        gather_bytes: See :func:`rescore`.

    Returns:
        ``(ids, sims, num_fallback)``: (N, m + 1) int64 ids (-1: no entry)
        and float32 scores of candidate lists ready for
        :func:`mmcc.clustering.canonical_neighbours`, and how many rows
        needed the float32 search.
    """
    n = x.shape[0]
    m = min(n - 1, k - 1 + (_SCREEN_EXTRA if extra is None else extra))
    xt = torch.from_numpy(x)
    xb = xt.to(torch.bfloat16)
    base, rel = screen_error_bound(xt, xb)
    cand, screen = symmetric_screen(xb, m, block_bytes)
    del xb
    threshold = screen[:, -1]  # no other point screened above it
    # Largest float32 product a point outside the candidates can have.
    reach = (threshold + base + rel * threshold.abs()).numpy()
    return certified_lists(x, k, cand.numpy(), reach, fallback, gather_bytes)


def certified_lists(
    x: np.ndarray,
    k: int,
    cand: np.ndarray,
    reach: np.ndarray,
    fallback: ExactSearch,
    gather_bytes: int = FEATURE_GATHER_BYTES
) -> Tuple[np.ndarray, np.ndarray, int]:
    """Steps 2 and 3 of the module docstring, after any screen.

    Args:
        x: (N, D) float32 features.
        k: Entries per row, the point itself included.
        cand: (N, m) int64 screened candidates of every row (itself not
            among them), m >= k - 1.
        reach: (N,) the largest float32 product with row i that a point
            outside its candidates can have (the screen's guarantee).
        fallback: The float32 search of the rows not certified.
        gather_bytes: See :func:`rescore`.

    Returns:
        As :func:`screened_search`.
    """
    n, m = cand.shape
    exact = rescore(x, cand, gather_bytes)
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
        ids[redo], sims[redo] = fallback(x, redo, m + 1)
    return ids, sims, len(redo)
