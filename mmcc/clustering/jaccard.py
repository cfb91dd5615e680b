"""k-reciprocal Jaccard distance (Zhong et al., CVPR 2017) for clustering.

The distance between all N training embeddings, as Cluster Contrast feeds it
to DBSCAN (k1=30, k2=6). With ``rank`` the kNN lists of
:func:`mmcc.clustering.knn_search` (k1 entries per row, the point itself
first):

1. ``R(i)`` = the k-reciprocal neighbours of i among ``rank[i, :k1]``: j such
   that i is in ``rank[j, :k1]``; ``Rh(i)`` the same within the first
   ``round(k1 / 2) + 1`` entries (round half to even: 16 entries for k1=30).
2. Expansion: ``E(i)`` = R(i) plus every ``Rh(c)``, c in R(i), with
   ``|Rh(c) & R(i)| > 2/3 |Rh(c)|`` (strictly).
3. ``V[i, E(i)] = softmax(-(2 - 2 <x_i, x_j>))`` over j in E(i), 0 elsewhere.
4. Query expansion: ``Vq[i] = mean(V[rank[i, :k2]])`` (skipped when k2 = 1).
5. ``s(i, j) = sum_c min(Vq[i, c], Vq[j, c])``,
   ``d_J(i, j) = max(0, 1 - s / (2 - s))``.

Two implementations give the same numbers:

* ``mode='dense'`` is the reference implementation's computation as it does
  it: per-row Python loops, dense N x N float32 ``V``, ``Vq`` and result.
  O(N^2) memory (two 4 N^2-byte matrices alive at the peak, 8.5 GB at
  N=32,621) and O(N^2) time. Kept as the baseline of tests and of the
  benchmark. The reference's ``use_float16`` storage option (off in its
  training scripts) is not reproduced: both modes are float32.
* ``mode='sparse'`` (default) computes the same float32 operations in the
  same order on sparse rows: ``V`` and ``Vq`` have O(k1 k2) entries per row,
  d_J is stored only for pairs whose ``Vq`` rows share a column (every other
  pair has s = 0, i.e. d_J = 1 exactly, the largest value). Memory is
  O(N k1 k2) plus chunk buffers of bounded size; nothing N x N is allocated.

Numerical agreement: the float32 sums are accumulated in the reference's
order (``Vq``: kNN order, then ``np.mean``'s division; ``s``: increasing
column) and both modes take the softmax weights from the same batched
float32 matmul, whose rounding does not depend on the batch, so the two
modes return the same float32 values bit for bit (tests check it). Against
the reference's own ``torch.mm`` per row the weights may differ in the last
bit (a few 1e-7 on d_J).
"""
from typing import Optional, Tuple, Union

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from .knn import ArrayLike, as_float32_numpy, knn_search

# Byte budgets of the sparse path's chunk buffers.
_GATHER_BYTES = 32 * 2**20  # gathered (rows, |E|, D) features for softmax
_ACC_BYTES = 128 * 2**20  # (rows, N) float32 accumulator of s(i, .)
_INDEX_ROWS = 4096  # rows per chunk of the index-only stages


def half_width(k1: int) -> int:
    """Entries of the kNN list used for ``Rh``: ``round(k1 / 2) + 1``.

    Python/numpy rounding is half to even (k1=30 -> 16, k1=15 -> 9).
    """
    return int(np.around(k1 / 2)) + 1


# ---------------------------------------------------------------------------
# Sparse path, stage by stage. ``rank`` is (N, k) int64 with rank[:, 0] = i.
# ---------------------------------------------------------------------------


def reciprocal_mask(rank: np.ndarray, width: int,
                    chunk_rows: int = _INDEX_ROWS) -> np.ndarray:
    """Which of the first ``width`` neighbours of i have i among theirs.

    Args:
        rank: (N, k) int64 kNN lists, ``width <= k``.
        width: Entries of every list to use.

    Returns:
        (N, width) bool, ``mask[i, p] = i in rank[rank[i, p], :width]``.
    """
    n = rank.shape[0]
    head = np.ascontiguousarray(rank[:, :width])
    mask = np.empty((n, width), dtype=bool)
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        backward = head[head[start:stop]]  # (c, width, width)
        mask[start:stop] = (backward == np.arange(
            start, stop)[:, None, None]).any(axis=2)
    return mask


def expanded_sets(rank: np.ndarray, k1: int,
                  chunk_rows: int = _INDEX_ROWS
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """The expanded k-reciprocal set E(i) of every point (steps 1-2).

    Args:
        rank: (N, k) int64 kNN lists (self first), k = min(k1, N).
        k1: The k1 parameter (fixes the width of ``Rh``).

    Returns:
        tuple: CSR structure ``(indptr, indices)``: (N + 1,) int64 and
        (nnz,) int64, ``indices[indptr[i]:indptr[i + 1]]`` = E(i) sorted
        increasingly (as ``np.unique`` returns it).
    """
    n, width = rank.shape
    hwidth = min(half_width(k1), width)
    empty = n  # id of "no point", sorts after every real id
    full = np.where(reciprocal_mask(rank, width, chunk_rows), rank, empty)
    half = np.full((n + 1, hwidth), empty, dtype=np.int64)
    half[:n] = np.where(
        reciprocal_mask(rank, hwidth, chunk_rows), rank[:, :hwidth], empty)
    half_size = np.zeros(n + 1)
    half_size[:n] = (half[:n] != empty).sum(1)
    # The same float64 threshold as ``len(a) > 2 / 3 * len(b)`` in Python.
    threshold = 2 / 3 * half_size

    counts = np.zeros(n, dtype=np.int64)
    pieces = []
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        rows = stop - start
        own = full[start:stop]  # (c, k) R(i), padded with `empty`
        # Membership in R(i) by binary search in globally sorted keys
        # row * (n + 1) + member.
        offset = np.arange(rows, dtype=np.int64)[:, None] * (n + 1)
        keys = (np.sort(own, axis=1) + offset).ravel()
        cand = half[own]  # (c, k, hwidth) Rh(c) for every c in R(i)
        query = cand + offset[:, :, None]
        pos = np.minimum(np.searchsorted(keys, query.ravel()), keys.size - 1)
        inside = (keys[pos].reshape(query.shape) == query) & (cand != empty)
        accept = (own != empty) & (inside.sum(2) > threshold[own])
        merged = np.concatenate(
            [own, np.where(accept[:, :, None], cand, empty).reshape(rows, -1)],
            axis=1)
        merged.sort(axis=1)
        keep = merged != empty
        keep[:, 1:] &= merged[:, 1:] != merged[:, :-1]
        counts[start:stop] = keep.sum(1)
        pieces.append(merged[keep])
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, np.concatenate(pieces) if pieces else np.zeros(0, np.int64)


def _softmax_rows(x: torch.Tensor, rows: torch.Tensor,
                  cols: torch.Tensor) -> torch.Tensor:
    """softmax(-(2 - 2 <x_i, x_j>)) over j for a batch of equal-size sets.

    Args:
        x: (N, D) float32 features.
        rows: (B,) int64 point ids i.
        cols: (B, m) int64 the sets E(i), all of size m.

    Returns:
        (B, m) float32 weights, each row summing to 1; the same per-row
        float32 matmul and softmax as the reference's loop.
    """
    # index_select copies whole rows: much faster than x[cols] on a 2-D index
    neighbours = x.index_select(0, cols.reshape(-1)).view(*cols.shape, -1)
    query = x.index_select(0, rows).unsqueeze(1)
    dist = 2 - 2 * torch.bmm(query, neighbours.transpose(1, 2))
    return F.softmax(-dist, dim=2).squeeze(1)


def expansion_weights(x: torch.Tensor, indptr: np.ndarray,
                      indices: np.ndarray,
                      gather_bytes: int = _GATHER_BYTES) -> np.ndarray:
    """Values of V on the expanded sets (step 3).

    Rows are batched by set size, so no padding enters a softmax.

    Args:
        x: (N, D) float32 features (CPU or GPU tensor).
        indptr, indices: CSR structure of E, from :func:`expanded_sets`.

    Returns:
        (nnz,) float32 CSR values aligned with ``indices``.
    """
    n, dim = x.shape
    sizes = np.diff(indptr)
    values = np.empty(indices.size, dtype=np.float32)
    cols_all = torch.from_numpy(indices).to(x.device)
    for m in np.unique(sizes):
        if m == 0:
            continue
        rows = np.flatnonzero(sizes == m)
        batch = max(1, gather_bytes // (4 * int(m) * dim))
        for start in range(0, rows.size, batch):
            sel = rows[start:start + batch]
            # positions of the m entries of every selected row
            pos = indptr[sel][:, None] + np.arange(m)
            pos_t = torch.from_numpy(pos).to(x.device)
            w = _softmax_rows(x, torch.from_numpy(sel).to(x.device),
                              cols_all[pos_t])
            values[pos.ravel()] = w.cpu().numpy().ravel()
    return values


def _expand_segments(ptr: np.ndarray, which: np.ndarray
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Concatenate CSR segments ``which`` of a structure with ``ptr``.

    Returns:
        tuple: ``(owner, pos)``, for every gathered entry the index into
        ``which`` it came from and its position in the CSR arrays.
    """
    lengths = ptr[which + 1] - ptr[which]
    owner = np.repeat(np.arange(which.size), lengths)
    first = np.cumsum(lengths) - lengths
    pos = ptr[which][owner] + (np.arange(owner.size) - first[owner])
    return owner, pos


def query_expansion(indptr: np.ndarray, indices: np.ndarray,
                    values: np.ndarray, rank: np.ndarray, k2: int,
                    chunk_rows: int = _INDEX_ROWS
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Vq[i] = mean of V over rank[i, :k2]`` on CSR rows (step 4).

    Sums in float32 in kNN order then divides as ``np.mean`` does (float64
    quotient rounded to float32), which is the reference's arithmetic.

    Args:
        indptr, indices, values: CSR of V, (N + 1,), (nnz,), (nnz,).
        rank: (N, k) kNN lists.
        k2: Number of leading kNN entries averaged (clamped to k).

    Returns:
        tuple: CSR ``(indptr, indices, values)`` of Vq, columns sorted.
    """
    n = rank.shape[0]
    k2 = min(k2, rank.shape[1])
    out_counts = np.zeros(n, dtype=np.int64)
    out_idx, out_val = [], []
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        parts = []
        for t in range(k2):
            owner, pos = _expand_segments(indptr, rank[start:stop, t])
            parts.append((owner * n + indices[pos], values[pos]))
        keys = np.unique(np.concatenate([p[0] for p in parts]))
        acc = np.zeros(keys.size, dtype=np.float32)
        for part_keys, part_vals in parts:  # a key occurs once per source row
            where = np.searchsorted(keys, part_keys)
            acc[where] += part_vals
        np.true_divide(acc, np.intp(k2), out=acc, casting='unsafe')
        out_counts[start:stop] = np.bincount(keys // n, minlength=stop - start)
        out_idx.append(keys % n)
        out_val.append(acc)
    out_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(out_counts, out=out_ptr[1:])
    return out_ptr, np.concatenate(out_idx), np.concatenate(out_val)


def min_sum_distance(indptr: np.ndarray, indices: np.ndarray,
                     values: np.ndarray,
                     acc_bytes: int = _ACC_BYTES) -> sp.csr_matrix:
    """d_J from the rows of Vq (step 5), on pairs sharing a column.

    For a chunk of rows i, ``s(i, .)`` accumulates in a (rows, N) float32
    buffer, column by column in increasing order (the reference's order);
    all rows of the chunk advance together, one column rank per step, so no
    (i, j) is written twice in one vectorised step.

    Args:
        indptr, indices, values: CSR of Vq, (N + 1,), (nnz,), (nnz,),
            columns sorted within every row.
        acc_bytes: Size of the accumulator buffer.

    Returns:
        (N, N) float32 CSR, sorted indices, d_J of every pair (i, j) whose
        Vq rows share a column, the diagonal included (explicitly stored even
        where it is 0).
    """
    n = indptr.size - 1
    vq = sp.csr_matrix((values, indices, indptr), shape=(n, n))
    col_major = vq.tocsc()  # column c -> rows j with Vq[j, c] != 0
    c_ptr = col_major.indptr.astype(np.int64)
    c_rows, c_vals = col_major.indices.astype(np.int64), col_major.data
    # Pairs sharing a column: the pattern of Vq Vq^T (counts are not used).
    support = sp.csr_matrix((np.ones(indices.size, np.float32), indices,
                             indptr), shape=(n, n))
    support_t = support.T.tocsr()
    chunk = max(1, min(n, acc_bytes // (4 * max(n, 1))))
    acc = np.zeros(chunk * n, dtype=np.float32)
    row_nnz = np.diff(indptr)
    out_ptr = np.zeros(n + 1, dtype=np.int64)
    out_idx, out_val = [], []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        pattern = support[start:stop] @ support_t
        pattern.sort_indices()
        local_nnz = row_nnz[start:stop]
        for t in range(int(local_nnz.max(initial=0))):
            active = np.flatnonzero(local_nnz > t)
            entry = indptr[start + active] + t
            owner, pos = _expand_segments(c_ptr, indices[entry])
            contrib = np.minimum(values[entry][owner], c_vals[pos])
            target = active[owner] * n + c_rows[pos]
            acc[target] += contrib
        lrow = np.repeat(np.arange(stop - start), np.diff(pattern.indptr))
        target = lrow * n + pattern.indices
        s = acc[target]
        acc[target] = 0
        dist = 1 - s / (2 - s)
        np.maximum(dist, 0, out=dist)
        out_ptr[start + 1:stop + 1] = np.diff(pattern.indptr)
        out_idx.append(pattern.indices)
        out_val.append(dist.astype(np.float32, copy=False))
    np.cumsum(out_ptr, out=out_ptr)
    idx_dtype = np.int32 if n < 2**31 else np.int64
    dist = sp.csr_matrix(
        (np.concatenate(out_val) if out_val else np.zeros(0, np.float32),
         np.concatenate(out_idx).astype(idx_dtype)
         if out_idx else np.zeros(0, idx_dtype), out_ptr.astype(idx_dtype)),
        shape=(n, n))
    dist.has_sorted_indices = True
    return dist


def _jaccard_sparse(x: torch.Tensor, rank: np.ndarray, k1: int,
                    k2: int) -> sp.csr_matrix:
    e_ptr, e_idx = expanded_sets(rank, k1)
    v_val = expansion_weights(x, e_ptr, e_idx)
    if k2 != 1:
        q_ptr, q_idx, q_val = query_expansion(e_ptr, e_idx, v_val, rank, k2)
    else:
        q_ptr, q_idx, q_val = e_ptr, e_idx, v_val
    del e_idx, v_val
    return min_sum_distance(q_ptr, q_idx, q_val)


# ---------------------------------------------------------------------------
# Dense path: the reference's own computation, kept as the baseline.
# ---------------------------------------------------------------------------


def _reciprocal_list(rank: np.ndarray, i: int, width: int) -> np.ndarray:
    """R(i) within the first ``width`` entries, in kNN order."""
    forward = rank[i, :width]
    backward = rank[forward, :width]
    return forward[np.where(backward == i)[0]]


def _jaccard_dense(x: torch.Tensor, rank: np.ndarray, k1: int,
                   k2: int) -> np.ndarray:
    n = rank.shape[0]
    # The reference slices [:k1 + 1] of a k1-column table: all k1 entries.
    full_sets = [_reciprocal_list(rank, i, k1 + 1) for i in range(n)]
    half_sets = [
        _reciprocal_list(rank, i, half_width(k1)) for i in range(n)
    ]

    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        own = full_sets[i]
        grown = own
        for c in own:
            cand = half_sets[c]
            if len(np.intersect1d(cand, own)) > 2 / 3 * len(cand):
                grown = np.append(grown, cand)
        grown = np.unique(grown)
        # The reference's torch.mm of (1, D) by (D, m), run as a batch of
        # one through the sparse path's bmm: same float32 arithmetic, and
        # bmm rounds a row the same whatever the batch (mm's small-m kernel
        # differs in the last bit).
        cols = torch.from_numpy(grown).to(x.device)
        v[i, grown] = _softmax_rows(
            x, torch.tensor([i], device=x.device), cols[None]).cpu().numpy()
    del full_sets, half_sets

    if k2 != 1:
        vq = np.zeros_like(v, dtype=np.float32)
        for i in range(n):
            vq[i, :] = np.mean(v[rank[i, :k2], :], axis=0)
        v = vq
        del vq

    holders = [np.where(v[:, c] != 0)[0] for c in range(n)]
    dist = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        s = np.zeros((1, n), dtype=np.float32)
        cols = np.where(v[i, :] != 0)[0]
        for c in cols:
            rows = holders[c]
            s[0, rows] = s[0, rows] + np.minimum(v[i, c], v[rows, c])
        dist[i] = 1 - s / (2 - s)
    del holders, v
    dist[dist < 0] = 0.0
    return dist


def jaccard_distance(features: ArrayLike,
                     k1: int = 30,
                     k2: int = 6,
                     mode: str = 'sparse',
                     knn: str = 'auto',
                     knn_backend: str = 'auto',
                     rank: Optional[np.ndarray] = None
                     ) -> Union[sp.csr_matrix, np.ndarray]:
    """k-reciprocal Jaccard distance between all rows of ``features``.

    Args:
        features: (N, D) L2-normalised embeddings, array or tensor (a tensor
            stays on its device for the softmax weights).
        k1: Size of the kNN lists, the point itself included (clamped to N).
        k2: Size of the local query expansion, itself included (clamped).
        mode: ``'sparse'`` (default) or ``'dense'`` (reference baseline,
            O(N^2) memory), see the module docstring.
        knn: kNN method, ``'auto'``, ``'exact'``, ``'screened'``,
            ``'hnsw'`` or ``'ivf'`` (:func:`mmcc.clustering.knn_search`).
        knn_backend: ``'auto'``, ``'faiss'`` or ``'torch'``.
        rank: Optional precomputed (N, >= min(k1, N)) kNN lists in the
            canonical order of :func:`knn_search` (self first), e.g. to run
            both modes on the same lists.

    Returns:
        ``'sparse'``: (N, N) float32 ``scipy.sparse.csr_matrix`` with sorted
        indices storing d_J for every pair whose expanded neighbourhoods
        overlap, the diagonal always stored (an explicit 0 where d_J(i, i) is
        0); every pair not stored has d_J = 1, the maximum.
        ``'dense'``: (N, N) float32 ``np.ndarray``, 1 exactly on those pairs.
    """
    if mode not in ('sparse', 'dense'):
        raise ValueError(f'unknown mode {mode!r}')
    if isinstance(features, torch.Tensor):
        x = features.detach().float().contiguous()
    else:
        x = torch.from_numpy(as_float32_numpy(features))
    n = x.shape[0]
    if n == 0:
        return (sp.csr_matrix((0, 0), dtype=np.float32)
                if mode == 'sparse' else np.zeros((0, 0), np.float32))
    width = min(k1, n)
    if rank is None:
        rank, _ = knn_search(x, width, method=knn, backend=knn_backend)
    rank = np.ascontiguousarray(rank[:, :width], dtype=np.int64)
    if rank.shape != (n, width) or (rank[:, 0] != np.arange(n)).any():
        raise ValueError('rank must hold (N, >= min(k1, N)) kNN lists with '
                         'every point first in its own list (knn_search)')
    if mode == 'dense':
        return _jaccard_dense(x, rank, k1, k2)
    return _jaccard_sparse(x, rank, k1, k2)
