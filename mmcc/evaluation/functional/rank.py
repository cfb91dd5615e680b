"""Ranking arithmetic of re-ID evaluation: CMC, mAP, mINP and re-ranking.

Protocol (Market-1501): for a query, the gallery entries of the same identity
taken by the same camera are ignored, and so are "junk" entries (identity
-1); identity 0 ("distractors") stays in the gallery as an ordinary negative.
The remaining entries are the query's *valid* gallery, ranked by increasing
distance.

Ties. A ranking is read as a sequence of distance thresholds, the way
scikit-learn's ``average_precision_score`` reads scores: entries at the same
distance are retrieved together. The rank of an entry is therefore the
number of valid entries at a distance **smaller than or equal to** its own,
i.e. a tie is resolved against the query. Without ties this is the usual
1-based position in the sorted list.
"""
import warnings
from typing import Dict, Sequence, Union

import numpy as np
import scipy.sparse as sp
import torch

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]

# Distance entries per block of rows: bounds the memory of the block's masks
# and candidate lists (tens of MB) whatever the gallery size.
_BLOCK_ELEMENTS = 1 << 22


def _count_below(thresholds: torch.Tensor, rows: torch.Tensor,
                 values: torch.Tensor) -> torch.Tensor:
    """How many of its row's thresholds are strictly smaller than each value.

    A branch-free binary search run on all values at once, so that each
    value is compared with its own row's thresholds only.

    Args:
        thresholds (Tensor): (B, P) thresholds, ascending along each row.
        rows (Tensor): (K, ) the row of each value.
        values (Tensor): (K, ) the values.

    Returns:
        Tensor: (K, ) counts in [0, P].
    """
    num_rows, num_thresholds = thresholds.shape
    # Pad each row to 2^m - 1 entries with inf, so that every probe of the
    # search stays inside its row. int32 offsets: a block holds < 2^23 cells.
    width = (1 << num_thresholds.bit_length()) - 1
    table = thresholds.new_full((num_rows, width), torch.inf)
    table[:, :num_thresholds] = thresholds
    table = table.view(-1)
    # pos = offset of the last threshold known to be below the value (its
    # row's start - 1 while none is).
    start = rows.int() * width - 1
    pos = start.clone()
    step = (width + 1) >> 1
    while step:
        pos.add_(table[pos + step] < values, alpha=step)
        step >>= 1
    return (pos - start).long()


def rank_metrics(
    distmat: ArrayLike,
    query_ids: ArrayLike,
    gallery_ids: ArrayLike,
    query_cams: ArrayLike,
    gallery_cams: ArrayLike,
    topk: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
    """CMC top-k, mAP and mINP of a query-gallery distance matrix.

    With the rank of an entry defined as in the module docstring, for a query
    with positives p_1..p_n (valid gallery entries of its identity):

    - AP = mean over positives of (positives ranked <= rank(p)) / rank(p),
      which equals ``sklearn.metrics.average_precision_score(y_true, -dist)``
      over the valid entries, ties included;
    - CMC hit at k: the best-ranked positive has rank <= k;
    - INP = n / rank of the worst-ranked positive (Ye et al., TPAMI 2021).

    Queries without any valid positive are skipped; all results are means
    over the remaining queries. If no query remains, every result is 0.0 and
    a warning is issued.

    Only the positives' ranks are needed, never a sorted row. Per query, the
    sorted positive distances t_1 <= ... <= t_n cut the distance axis into
    buckets; the gallery entries closer than t_n (few, for a useful model)
    are dropped into their buckets by binary search, and the cumulated
    bucket counts, minus those of the ignored entries, are the positives'
    ranks. Positives and ignored entries are found through the gallery
    grouped by identity, so no dense mask is built. Queries are processed in
    blocks, on the device of ``distmat``.

    Args:
        distmat (np.ndarray | Tensor): (Q, G) distances, smaller is closer;
            no NaN.
        query_ids (array-like): (Q, ) integer identities of the queries.
        gallery_ids (array-like): (G, ) integer identities of the gallery;
            -1 marks junk entries.
        query_cams (array-like): (Q, ) camera indices of the queries.
        gallery_cams (array-like): (G, ) camera indices of the gallery.
        topk (Sequence[int]): The k of the CMC scores. Defaults to (1, 5, 10).

    Returns:
        dict[str, float]: ``mAP``, ``mINP`` and ``top{k}`` for every k, as
        fractions in [0, 1].
    """
    distmat = torch.as_tensor(distmat)
    if not distmat.is_floating_point() or distmat.dtype == torch.float16:
        distmat = distmat.float()
    device = distmat.device

    def as_long(x):
        return torch.as_tensor(x, device=device).reshape(-1).long()

    query_ids, gallery_ids = as_long(query_ids), as_long(gallery_ids)
    query_cams, gallery_cams = as_long(query_cams), as_long(gallery_cams)
    num_query, num_gallery = distmat.shape
    assert len(query_ids) == len(query_cams) == num_query, \
        'query_ids and query_cams must have one entry per row of distmat'
    assert len(gallery_ids) == len(gallery_cams) == num_gallery, \
        'gallery_ids and gallery_cams must have one entry per column'
    ks = torch.as_tensor(list(topk), device=device)

    ap_sum = inp_sum = 0.
    hits = torch.zeros(len(ks), dtype=torch.long, device=device)
    num_valid = 0
    # The gallery grouped by identity: the members of identity i are
    # by_id[first(i):last(i)].
    by_id = torch.argsort(gallery_ids, stable=True)
    sorted_ids = gallery_ids[by_id]
    junk = torch.nonzero(gallery_ids == -1)[:, 0]
    block = max(1, _BLOCK_ELEMENTS // max(num_gallery, 1))
    for start in range(0, num_query if num_gallery else 0, block):
        dist = distmat[start:start + block]
        ids = query_ids[start:start + block]
        cams = query_cams[start:start + block, None]

        # (B, M) each query's gallery entries of its own identity.
        first = torch.searchsorted(sorted_ids, ids)
        group_size = torch.searchsorted(sorted_ids, ids, right=True) - first
        slots = torch.arange(int(group_size.max()), device=device)
        in_group = (slots < group_size[:, None]) & (ids[:, None] != -1)
        members = by_id[(first[:, None] + slots).clamp_(max=num_gallery - 1)]
        member_dist = dist.gather(1, members)
        same_cam = gallery_cams[members] == cams
        positive = in_group & ~same_cam
        num_pos = positive.sum(1)
        max_pos = int(num_pos.max()) if len(num_pos) else 0
        if max_pos == 0:
            continue

        # (B, P): each query's positive distances, ascending, padded with inf.
        thresholds = torch.where(positive, member_dist, torch.inf).sort(1)
        thresholds = thresholds.values[:, :max_pos].contiguous()
        last = (num_pos.clamp(min=1) - 1)[:, None]
        # Entries beyond the farthest positive play no part in any rank.
        limit = torch.where(num_pos[:, None] > 0, thresholds.gather(1, last),
                            -torch.inf)
        # Each entry within it gets a bucket, the number of positives strictly
        # closer: the entry is within threshold j (distance <= t_j) iff its
        # bucket is <= j.
        rows, cols = (dist <= limit).nonzero(as_tuple=True)
        bucket = _count_below(thresholds, rows, dist[rows, cols])
        # Ignored entries are counted back out: same identity and camera,
        # and junk.
        ignored = torch.cat([member_dist, dist[:, junk]], 1)
        is_ignored = torch.cat([
            in_group & same_cam,
            junk.new_ones((len(dist), len(junk)), dtype=torch.bool)
        ], 1)
        ignored_rows, ignored_cols = (is_ignored & (ignored <= limit)).nonzero(
            as_tuple=True)
        ignored_bucket = _count_below(thresholds, ignored_rows,
                                      ignored[ignored_rows, ignored_cols])
        # All buckets are < num_pos, as no entry lies beyond the limit.
        size = len(dist) * max_pos
        counts = torch.bincount(rows * max_pos + bucket, minlength=size) - \
            torch.bincount(ignored_rows * max_pos + ignored_bucket,
                           minlength=size)
        # (B, P) rank of each positive = valid entries within its threshold.
        rank = counts.view(len(dist), max_pos).cumsum(1)
        # Positives within each threshold (ties among positives included);
        # the clamp keeps the inf padding out when a positive is at inf.
        pos_rank = torch.searchsorted(
            thresholds, thresholds, right=True).clamp_(max=num_pos[:, None])

        is_real = torch.arange(max_pos, device=device) < num_pos[:, None]
        valid = num_pos > 0
        n = num_pos.clamp(min=1).double()
        precision = pos_rank.double() / rank.double()
        ap = (precision * is_real).sum(1) / n
        inp = n / rank.gather(1, last)[:, 0].double()
        ap_sum += float(ap[valid].sum())
        inp_sum += float(inp[valid].sum())
        hits += (rank[valid, :1] <= ks).sum(0)
        num_valid += int(valid.sum())

    if num_valid == 0:
        warnings.warn('rank_metrics: no query has a valid positive in the '
                      'gallery; every metric is reported as 0.')
        num_valid = 1  # the sums are 0: report zeros.
    results = dict(mAP=ap_sum / num_valid, mINP=inp_sum / num_valid)
    for k, hit in zip(topk, hits.tolist()):
        results[f'top{k}'] = hit / num_valid
    return results


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _nearest_neighbours(dist: np.ndarray, k: int) -> np.ndarray:
    """(N, k) column indices of each row's k smallest entries, ascending."""
    k = min(k, dist.shape[1])
    block = max(1, _BLOCK_ELEMENTS // dist.shape[1])
    out = np.empty((len(dist), k), dtype=np.int64)
    for start in range(0, len(dist), block):
        rows = dist[start:start + block]
        nearest = np.argpartition(rows, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(rows, nearest, 1).argsort(1, kind='stable')
        out[start:start + block] = np.take_along_axis(nearest, order, 1)
    return out


def _k_reciprocal(neighbours: np.ndarray, k: int):
    """The k-reciprocal neighbours R(i, k) of every point.

    Args:
        neighbours (np.ndarray): (N, >= k + 1) nearest-neighbour lists, the
            point itself first.
        k (int): Neighbourhood size; each list holds k + 1 entries.

    Returns:
        tuple[np.ndarray]: (N, k + 1) candidate indices (the kNN list) and an
        (N, k + 1) mask of those that are in R(i, k), i.e. whose own kNN list
        contains i.
    """
    knn = neighbours[:, :k + 1]
    points = np.arange(len(knn))[:, None, None]
    return knn, (knn[knn] == points).any(-1)


def _min_intersection(v: sp.csr_matrix, by_col: sp.csc_matrix,
                      rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """s[a, b] = sum_k min(v[rows[a], k], v[cols[b], k]).

    Args:
        v (sp.csr_matrix): (N, N) non-negative weights, O(k1) non-zeros a row.
        by_col (sp.csc_matrix): The same matrix in CSC form.
        rows (np.ndarray): (A, ) row indices.
        cols (np.ndarray): (C, ) row indices to pair them with.

    Returns:
        np.ndarray: (A, C) sums. Only the pairs of non-zeros that share a
        column are formed: each non-zero v[i, k] meets column k's.
    """
    v_rows = v[rows].tocoo()
    col_of = np.full(v.shape[0], -1)
    col_of[cols] = np.arange(len(cols))
    starts = by_col.indptr[v_rows.col]
    counts = by_col.indptr[v_rows.col + 1] - starts
    # Concatenated ranges starts[e]..starts[e] + counts[e] of the CSC arrays.
    offsets = np.repeat(starts - np.cumsum(counts) + counts, counts)
    index = offsets + np.arange(counts.sum())
    pair_row = np.repeat(v_rows.row, counts)
    pair_col = col_of[by_col.indices[index]]
    pair_min = np.minimum(np.repeat(v_rows.data, counts), by_col.data[index])
    keep = pair_col >= 0
    flat = pair_row[keep] * len(cols) + pair_col[keep]
    return np.bincount(
        flat, weights=pair_min[keep],
        minlength=len(rows) * len(cols)).reshape(len(rows), len(cols))


def re_ranking(q_g_dist: ArrayLike,
               q_q_dist: ArrayLike,
               g_g_dist: ArrayLike,
               k1: int = 20,
               k2: int = 6,
               lambda_value: float = 0.3) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017), for test time.

    Query and gallery are pooled into N = Q + G points. As in the authors'
    released code, the pooled distances are squared and each row is divided
    by its maximum (d below). Then for every point i:

    - R(i, k1): the points j among i's k1 + 1 nearest (itself included)
      that have i among their own k1 + 1 nearest;
    - expansion: for each j in R(i, k1), R(j, k1 / 2) (k1 / 2 rounded half
      to even) is added when more than 2/3 of it lies in R(i, k1);
    - V[i, j] = exp(-d(i, j)) normalised over the expanded set, 0 elsewhere,
      then (if k2 > 1) replaced by the mean of V over i's k2 nearest points;
    - Jaccard distance d_J(i, j) = 1 - s / (2 - s), s = sum_k min(V[i, k],
      V[j, k]).

    The result is (1 - lambda_value) * d_J + lambda_value * d between every
    query and every gallery entry. V is kept sparse; the pooled (N, N)
    distance matrix is dense float32 (about 1.5 GB for Market-1501).

    Args:
        q_g_dist (np.ndarray | Tensor): (Q, G) query-gallery distances, e.g.
            squared Euclidean distances of L2-normalised features.
        q_q_dist (np.ndarray | Tensor): (Q, Q) query-query distances.
        g_g_dist (np.ndarray | Tensor): (G, G) gallery-gallery distances.
        k1 (int): Size of the k-reciprocal neighbourhoods. Defaults to 20.
        k2 (int): Size of the local query expansion. Defaults to 6.
        lambda_value (float): Weight of the original distance.
            Defaults to 0.3.

    Returns:
        np.ndarray: (Q, G) float32 re-ranked distances.
    """
    q_g_dist = _to_numpy(q_g_dist)
    num_query = len(q_g_dist)
    dist = np.block([[_to_numpy(q_q_dist), q_g_dist],
                     [q_g_dist.T, _to_numpy(g_g_dist)]])
    np.square(dist, out=dist)
    # The reference divides columns by their maximum and transposes, which
    # for a symmetric matrix is this row normalisation.
    dist /= np.maximum(dist.max(axis=1, keepdims=True), 1e-12)
    num_points = len(dist)

    half = int(np.around(k1 / 2))
    neighbours = _nearest_neighbours(dist, max(k1 + 1, k2))
    knn, in_r = _k_reciprocal(neighbours, k1)  # (N, k1 + 1)
    knn_half, in_half = _k_reciprocal(neighbours, half)  # (N, half + 1)

    # Expansion. candidates[i, a] = the points of R(knn[i, a], half).
    candidates = knn_half[knn]  # (N, k1 + 1, half + 1)
    in_candidate = in_half[knn] & in_r[..., None]
    in_both = in_candidate & ((candidates[..., None] == knn[:, None, None, :])
                              & in_r[:, None, None, :]).any(-1)
    accepted = in_r & (in_both.sum(-1) > 2 / 3 * in_candidate.sum(-1))
    added = accepted[..., None] & in_candidate
    point = np.arange(num_points)
    rows = np.concatenate([
        np.broadcast_to(point[:, None], knn.shape)[in_r],
        np.broadcast_to(point[:, None, None], candidates.shape)[added]
    ])
    cols = np.concatenate([knn[in_r], candidates[added]])
    pairs = np.unique(rows * num_points + cols)
    rows, cols = pairs // num_points, pairs % num_points

    weight = np.exp(-dist[rows, cols]).astype(np.float64)
    weight /= np.bincount(rows, weights=weight, minlength=num_points)[rows]
    v = sp.csr_matrix((weight, (rows, cols)), shape=(num_points, num_points))
    if k2 > 1:
        k2 = min(k2, neighbours.shape[1])
        mean_rows = np.repeat(point, k2)
        mean_cols = neighbours[:, :k2].reshape(-1)
        averaging = sp.csr_matrix(
            (np.full(len(mean_rows), 1. / k2), (mean_rows, mean_cols)),
            shape=(num_points, num_points))
        v = (averaging @ v).tocsr()

    by_col = v.tocsc()
    gallery = np.arange(num_query, num_points)
    final = np.empty_like(q_g_dist)
    block = max(1, _BLOCK_ELEMENTS // max(len(gallery), 1))
    for start in range(0, num_query, block):
        end = min(start + block, num_query)
        shared = _min_intersection(v, by_col, point[start:end], gallery)
        jaccard = 1 - shared / (2 - shared)
        final[start:end] = (1 - lambda_value) * jaccard + \
            lambda_value * dist[start:end, num_query:]
    return final
