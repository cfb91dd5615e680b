"""k-reciprocal encoding (Zhong et al., CVPR 2017): the core of both uses.

The pseudo-labels' Jaccard distance (:func:`mmcc.clustering.jaccard_distance`)
and the test-time re-ranking (:func:`mmcc.evaluation.functional.re_ranking`)
run the same stages on rank lists ``rank``, (N, w) int64, row i = points by
increasing distance from point i:

1. ``R(i)`` = the k-reciprocal neighbours of i: j among the first ``width``
   entries of ``rank[i]`` such that i is among the first ``width`` entries
   of ``rank[j]``; ``Rh(i)`` the same within the first ``half`` entries
   (:func:`reciprocal_mask`).
2. Expansion: ``E(i)`` = R(i) plus every ``Rh(c)``, c in R(i), with
   ``|Rh(c) & R(i)| > 2/3 |Rh(c)|`` (strictly) (:func:`expanded_sets`).
3. ``V[i, E(i)] = softmax(-d(i, j))`` over j in E(i), 0 elsewhere
   (:func:`expansion_weights`).
4. Local query expansion: ``Vq[i] = mean(V[rank[i, :k2]])``, skipped when
   k2 = 1 (:func:`query_expansion`).
5. ``s(i, j) = sum_c min(Vq[i, c], Vq[j, c])``,
   ``d_J(i, j) = 1 - s / (2 - s)`` (:func:`min_sum_distance`).

:func:`k_reciprocal_jaccard` chains them. What differs between the two uses
is a parameter (``round`` is half to even, as in both references)::

                      pseudo-labels            re-ranking
    rank lists        kNN search: k1 entries,  argsort of the pooled q + g
                      the point itself first   distances: max(k1 + 1, k2)
    width of R        k1 (the point counted    k1 + 1 (k1 neighbours plus
                      among the k1)            the point itself)
    half width, Rh    round(k1 / 2) + 1        round(k1 / 2) + 1
    d(i, j), step 3   2 - 2 <x_i, x_j> of the  the given distance matrix
                      features                 (metric='precomputed')
    weights, step 3   torch softmax(-d)        numpy exp(-d) / sum exp(-d)
    d_J < 0 (s > 1    clipped to 0             kept
    by rounding)
    rows of d_J       all N                    the queries

Sparse layout: ``V`` and ``Vq`` are CSR rows with O(k1) and O(k1 k2)
entries; d_J is stored only for pairs whose ``Vq`` rows share a column
(every other pair has s = 0, i.e. d_J = 1 exactly, the largest value).
Memory is O(N k1 k2) plus chunk buffers of bounded size; nothing N x N is
allocated.

Arithmetic: float32, in the references' order (weights as each reference
computes them; ``Vq``: sum in rank order, then ``np.mean``'s division;
``s``: increasing column). The clustering weights come from one batched
matmul and softmax whose rounding does not depend on the batch, so the
per-row loops of :mod:`mmcc.testing.naive_k_reciprocal` give the same
float32 values bit for bit (tests check it); against the clustering
reference's own ``torch.mm`` per row they may differ in the last bit (a few
1e-7 on d_J). The re-ranking runs the float32 operations of the authors'
released code, in its order (equal bit for bit in our checks; rank lists may
order exact ties differently).
"""
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Tuple, Union

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from .budgets import FEATURE_GATHER_BYTES

# Bytes of the min-sum's (rows, N) float32 accumulator of s(i, .): sets the
# rows per chunk.
_ACC_BYTES = 128 * 2**20
# Terms (i, j, c) expanded at a time in the min-sum: ~36 bytes each.
_TERMS_PER_STEP = 4 * 2**20
# Rows per chunk of the index-only stages: their (rows, k, k) temporaries
# stay in the tens of MB for k up to a few tens.
_INDEX_ROWS = 4096

# Where the distance of the weights comes from: the features (clustering)
# or a given distance matrix (re-ranking).
METRICS = ('sqeuclidean', 'precomputed')


def half_width(k1: int) -> int:
    """Entries of the rank lists used for ``Rh``: ``round(k1 / 2) + 1``.

    Python/numpy rounding is half to even (k1=30 -> 16, k1=15 -> 9).
    """
    return int(np.around(k1 / 2)) + 1


def reciprocal_mask(rank: np.ndarray,
                    width: int,
                    chunk_rows: int = _INDEX_ROWS) -> np.ndarray:
    """Which of the first ``width`` entries of i's list have i among theirs.

    Args:
        rank: (N, k) int64 rank lists, ``width <= k``.
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
        mask[start:stop] = (backward == np.arange(start,
                                                  stop)[:, None,
                                                        None]).any(axis=2)
    return mask


def expanded_sets(
        rank: np.ndarray,
        k1: int,
        self_among_k1: bool = True,
        chunk_rows: int = _INDEX_ROWS) -> Tuple[np.ndarray, np.ndarray]:
    """The expanded k-reciprocal set E(i) of every point (steps 1-2).

    Args:
        rank: (N, k) int64 rank lists, every row a permutation prefix.
        k1: Neighbourhood size.
        self_among_k1: Whether the point itself counts as one of its k1
            nearest (pseudo-labels: R from the first k1 entries) or comes
            on top of them (re-ranking: the first k1 + 1 entries). Rh uses
            the first :func:`half_width` entries either way. Widths are
            clamped to k.

    Returns:
        tuple: CSR structure ``(indptr, indices)``: (N + 1,) int64 and
        (nnz,) int64, ``indices[indptr[i]:indptr[i + 1]]`` = E(i) sorted
        increasingly (as ``np.unique`` returns it).
    """
    n = rank.shape[0]
    width = min(k1 if self_among_k1 else k1 + 1, rank.shape[1])
    hwidth = min(half_width(k1), width)
    empty = n  # id of "no point", sorts after every real id
    full = np.where(
        reciprocal_mask(rank, width, chunk_rows), rank[:, :width], empty)
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
        own = full[start:stop]  # (c, width) R(i), padded with `empty`
        # Membership in R(i) by binary search in globally sorted keys
        # row * (n + 1) + member.
        offset = np.arange(rows, dtype=np.int64)[:, None] * (n + 1)
        keys = (np.sort(own, axis=1) + offset).ravel()
        cand = half[own]  # (c, width, hwidth) Rh(c) for every c in R(i)
        query = cand + offset[:, :, None]
        pos = np.minimum(np.searchsorted(keys, query.ravel()), keys.size - 1)
        inside = (keys[pos].reshape(query.shape) == query) & (cand != empty)
        accept = (own != empty) & (inside.sum(2) > threshold[own])
        merged = np.concatenate(
            [own,
             np.where(accept[:, :, None], cand, empty).reshape(rows, -1)],
            axis=1)
        merged.sort(axis=1)
        keep = merged != empty
        keep[:, 1:] &= merged[:, 1:] != merged[:, :-1]
        counts[start:stop] = keep.sum(1)
        pieces.append(merged[keep])
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, np.concatenate(pieces) if pieces else np.zeros(0, np.int64)


def _softmax_weights(x: torch.Tensor, rows: torch.Tensor,
                     cols: torch.Tensor) -> torch.Tensor:
    """softmax(-(2 - 2 <x_i, x_j>)) over j for a batch of equal-size sets.

    The clustering reference's arithmetic: a float32 product, then torch's
    softmax.

    Args:
        x: (N, D) float32 features.
        rows: (B,) int64 point ids i.
        cols: (B, m) int64 the sets E(i), all of size m.

    Returns:
        (B, m) float32 weights, each row summing to 1.
    """
    # index_select copies whole rows, much faster than x[cols] on a 2-D
    # index. One bmm for the batch: it rounds a row the same whatever the
    # batch size, unlike mm's small-m kernel.
    neighbours = x.index_select(0, cols.reshape(-1)).view(*cols.shape, -1)
    query = x.index_select(0, rows).unsqueeze(1)
    dist = 2 - 2 * torch.bmm(query, neighbours.transpose(1, 2))[:, 0]
    return F.softmax(-dist, dim=1)


def _exp_weights(dist: np.ndarray) -> np.ndarray:
    """exp(-d) normalised along rows: (B, m) float32 distances -> weights.

    The re-ranking reference's arithmetic: numpy float32 ``exp``, then a
    division by the row's ``np.sum``.
    """
    weights = np.exp(-dist)
    return weights / weights.sum(axis=1, keepdims=True)


def expansion_weights(x: Union[torch.Tensor, np.ndarray],
                      indptr: np.ndarray,
                      indices: np.ndarray,
                      gather_bytes: int = FEATURE_GATHER_BYTES,
                      metric: str = 'sqeuclidean') -> np.ndarray:
    """Values of V on the expanded sets (step 3).

    Rows are batched by set size, so no padding enters a normalisation.

    Args:
        x: With ``metric='sqeuclidean'``, (N, D) float32 L2-normalised
            features (CPU or GPU tensor, or array): d = 2 - 2 <x_i, x_j>,
            the squared Euclidean distance of unit rows, and torch's
            softmax. With ``'precomputed'``, the (N, N) float32 distances d
            themselves (array), and numpy's ``exp(-d) / sum``.
        indptr, indices: CSR structure of E, from :func:`expanded_sets`.
        gather_bytes: Bytes of the (rows, |E|, D) features gathered at once.
        metric: ``'sqeuclidean'`` or ``'precomputed'``.

    Returns:
        (nnz,) float32 CSR values aligned with ``indices``.
    """
    if metric not in METRICS:
        raise ValueError(f'unknown metric {metric!r}')
    precomputed = metric == 'precomputed'
    if precomputed:
        x = np.asarray(x, dtype=np.float32)
    elif isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    row_bytes = 4 * (1 if precomputed else x.shape[1])
    sizes = np.diff(indptr)
    values = np.empty(indices.size, dtype=np.float32)
    if not precomputed:
        cols_all = torch.from_numpy(indices).to(x.device)
    for m in np.unique(sizes):
        if m == 0:
            continue
        rows = np.flatnonzero(sizes == m)
        batch = max(1, gather_bytes // (int(m) * row_bytes))
        for start in range(0, rows.size, batch):
            sel = rows[start:start + batch]
            # positions of the m entries of every selected row
            pos = indptr[sel][:, None] + np.arange(m)
            if precomputed:
                w = _exp_weights(x[sel[:, None], indices[pos]])
            else:
                w = _softmax_weights(
                    x,
                    torch.from_numpy(sel).to(x.device),
                    cols_all[torch.from_numpy(pos).to(x.device)])
                w = w.cpu().numpy()
            values[pos.ravel()] = w.ravel()
    return values


def _expand_segments(ptr: np.ndarray,
                     which: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
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


def query_expansion(
    indptr: np.ndarray,
    indices: np.ndarray,
    values: np.ndarray,
    rank: np.ndarray,
    k2: int,
    chunk_rows: int = _INDEX_ROWS
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Vq[i] = mean of V over rank[i, :k2]`` on CSR rows (step 4).

    Sums in float32 in rank order then divides as ``np.mean`` does (float64
    quotient rounded to float32), which is the references' arithmetic.

    Args:
        indptr, indices, values: CSR of V, (N + 1,), (nnz,), (nnz,).
        rank: (N, k) rank lists.
        k2: Number of leading entries averaged (clamped to k).

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


def min_sum_distance(indptr: np.ndarray,
                     indices: np.ndarray,
                     values: np.ndarray,
                     acc_bytes: int = _ACC_BYTES,
                     rows: Optional[np.ndarray] = None,
                     clip_negative: bool = True,
                     max_distance: Optional[float] = None,
                     threads: Optional[int] = None) -> sp.csr_matrix:
    """d_J from the rows of Vq (step 5), on pairs sharing a column.

    For a chunk of rows i, ``s(i, .)`` accumulates in a (rows, N) float32
    buffer, column by column in increasing order (the references' order),
    with ``np.add.at`` over bounded groups of terms.

    Args:
        indptr, indices, values: CSR of Vq, (N + 1,), (nnz,), (nnz,),
            columns sorted within every row.
        acc_bytes: Size of the accumulator buffer.
        rows: (R,) int64 the points i whose distances to all N points are
            wanted (default: all N).
        clip_negative: Whether d_J below 0 (s above 1 by a rounding) is
            set to 0, as the clustering reference does.
        max_distance: Store only pairs with d_J <= this (chunk by chunk,
            so the dropped pairs never exist all at once). DBSCAN with
            ``eps`` looks at no other pair, and early-epoch embeddings
            overlap so widely that every pair is kept otherwise: ~2,800
            stored pairs a row for ImageNet MobileNetV2 on 10,000 crops,
            5,700 for 100,000 synthetic ones (17 GiB).
        threads: Threads sharing the row chunks, each with its own
            accumulator (default: ``torch.get_num_threads()``). The result
            does not depend on it.

    Returns:
        (R, N) float32 CSR, sorted indices, d_J of every pair (i, j) whose
        Vq rows share a column (and, with ``max_distance``, whose d_J is
        at most that), (i, i) included (explicitly stored even where it
        is 0).
    """
    n = indptr.size - 1
    rows = np.arange(n) if rows is None else np.asarray(rows, np.int64)
    vq = sp.csr_matrix((values, indices, indptr), shape=(n, n))
    col_major = vq.tocsc()  # column c -> rows j with Vq[j, c] != 0
    # Pairs sharing a column: the pattern of Vq Vq^T (counts are not used).
    support = sp.csr_matrix(
        (np.ones(indices.size, np.float32), indices, indptr), shape=(n, n))
    shared = dict(
        indptr=indptr,
        indices=indices,
        values=values,
        c_ptr=col_major.indptr.astype(np.int64),
        c_rows=col_major.indices.astype(np.int64),
        c_vals=col_major.data,
        support=support,
        support_t=support.T.tocsr(),
        clip_negative=clip_negative,
        max_distance=max_distance)
    del col_major
    chunk = max(1, min(rows.size, acc_bytes // (4 * max(n, 1))))
    starts = list(range(0, rows.size, chunk))
    workers = max(1, min(threads or torch.get_num_threads(), len(starts)))

    def work(my_starts):
        # one accumulator per worker, zero between chunks
        acc = np.zeros(chunk * n, dtype=np.float32)
        return [
            _min_sum_chunk(rows[start:start + chunk], acc, n, **shared)
            for start in my_starts
        ]

    if workers == 1:
        parts = work(starts)
    else:
        # NumPy's gathers, ufuncs and SciPy's sparse products release the
        # GIL, so threads share the chunks with no copy of Vq: 1.8x on 2
        # cores (docs/scaling.md). Interleaved, so every worker gets a
        # similar mix of rows.
        with ThreadPoolExecutor(workers) as pool:
            done = list(
                pool.map(work, [starts[w::workers] for w in range(workers)]))
        parts = [None] * len(starts)
        for w, results in enumerate(done):
            parts[w::workers] = results
    out_ptr = np.zeros(rows.size + 1, dtype=np.int64)
    out_ptr[1:] = np.concatenate([p[0] for p in parts]) if parts else []
    np.cumsum(out_ptr, out=out_ptr)
    idx_dtype = np.int32 if n < 2**31 else np.int64
    dist = sp.csr_matrix(
        (np.concatenate([p[2] for p in parts]) if parts else np.zeros(
            0, np.float32), np.concatenate([p[1]
                                            for p in parts]).astype(idx_dtype)
         if parts else np.zeros(0, idx_dtype), out_ptr.astype(idx_dtype)),
        shape=(rows.size, n))
    dist.has_sorted_indices = True
    return dist


def _min_sum_chunk(sel: np.ndarray, acc: np.ndarray, n: int, indptr, indices,
                   values, c_ptr, c_rows, c_vals, support, support_t,
                   clip_negative, max_distance):
    """d_J of the rows ``sel`` (see :func:`min_sum_distance`).

    ``acc`` is a zeroed float32 buffer of at least ``sel.size * n`` and is
    left zeroed. Returns the rows' stored counts (sel.size,), columns and
    float32 distances.
    """
    pattern = support[sel] @ support_t
    pattern.sort_indices()
    # Every entry (i, c) of the chunk's rows in CSR order, then the rows j
    # of column c: for each pair (i, j) the terms come in increasing c, and
    # np.add.at adds them in array order, so s(i, j) is summed in the
    # references' order, bit for bit. (Stepping through the rows' entries
    # one rank at a time, so that no target repeats within a plain
    # fancy-index +=, cost ~100 NumPy calls a chunk: that dominated at
    # N = 10^6, where a chunk holds 32 rows.) Consecutive groups of entries
    # keep the order and bound the expanded terms to about _TERMS_PER_STEP:
    # a chunk's rows can share columns with very many rows, so one pass
    # over all of them has no bound. (The 24 GB kills of the first 1M runs
    # came from check_finite's float64 copy, not from here; with the
    # groups, the 1M min-sum peaked 2.6 GiB above its inputs.)
    row, entry = _expand_segments(indptr, sel)
    terms = np.cumsum(c_ptr[indices[entry] + 1] - c_ptr[indices[entry]])
    cuts = np.searchsorted(
        terms,
        np.arange(_TERMS_PER_STEP, terms[-1] if terms.size else 0,
                  _TERMS_PER_STEP), 'right')
    for group in np.split(np.arange(entry.size), np.unique(cuts)):
        owner, pos = _expand_segments(c_ptr, indices[entry[group]])
        contrib = np.minimum(values[entry[group]][owner], c_vals[pos])
        np.add.at(acc, row[group][owner] * n + c_rows[pos], contrib)
    lrow = np.repeat(np.arange(sel.size), np.diff(pattern.indptr))
    target = lrow * n + pattern.indices
    s = acc[target]
    acc[target] = 0
    dist = 1 - s / (2 - s)
    if clip_negative:
        np.maximum(dist, 0, out=dist)
    counts = np.diff(pattern.indptr)
    cols = pattern.indices
    if max_distance is not None:
        keep = dist <= max_distance
        keep[sel[lrow] == cols] = True  # the diagonal stays stored
        dist, cols = dist[keep], cols[keep]
        counts = np.bincount(lrow[keep], minlength=sel.size)
    return counts, cols, dist.astype(np.float32, copy=False)


def k_reciprocal_jaccard(
        x: Union[torch.Tensor, np.ndarray],
        rank: np.ndarray,
        k1: int,
        k2: int,
        self_among_k1: bool = True,
        metric: str = 'sqeuclidean',
        clip_negative: bool = True,
        rows: Optional[np.ndarray] = None,
        max_distance: Optional[float] = None) -> sp.csr_matrix:
    """The k-reciprocal Jaccard distance d_J, steps 1-5 of the module doc.

    Args:
        x: What the weights' distance comes from: (N, D) features or (N, N)
            distances, see :func:`expansion_weights`.
        rank: (N, k) int64 rank lists, k >= the width of R (see
            :func:`expanded_sets`) and >= k2 (else k2 is clamped).
        k1: Neighbourhood size.
        k2: Size of the local query expansion (none when <= 1).
        self_among_k1: See :func:`expanded_sets`.
        metric: ``'sqeuclidean'`` or ``'precomputed'``.
        clip_negative: See :func:`min_sum_distance`.
        rows: (R,) the points i whose rows of d_J are wanted (default all).
        max_distance: See :func:`min_sum_distance`.

    Returns:
        (R, N) float32 CSR with sorted indices, d_J where the rows' expanded
        neighbourhoods overlap (and d_J <= ``max_distance``); every pair not
        stored has d_J = 1 (or is farther than ``max_distance``).
    """
    e_ptr, e_idx = expanded_sets(rank, k1, self_among_k1)
    v_val = expansion_weights(x, e_ptr, e_idx, metric=metric)
    if k2 > 1:
        q_ptr, q_idx, q_val = query_expansion(e_ptr, e_idx, v_val, rank, k2)
    else:
        q_ptr, q_idx, q_val = e_ptr, e_idx, v_val
    del e_idx, v_val
    return min_sum_distance(
        q_ptr,
        q_idx,
        q_val,
        rows=rows,
        clip_negative=clip_negative,
        max_distance=max_distance)
