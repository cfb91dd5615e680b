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
import math
import numbers
import warnings
from typing import Dict, Sequence, Union

import numpy as np
import torch

from mmcc.clustering import k_reciprocal_jaccard
from mmcc.utils.checks import check_finite, check_int

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

    Raises:
        ValueError: ``distmat`` not 2-D, or holding NaN or -inf (``+inf``
            is allowed: an entry infinitely far, ranked last).
    """
    distmat = torch.as_tensor(distmat)
    if not distmat.is_floating_point() or distmat.dtype == torch.float16:
        distmat = distmat.float()
    if distmat.dim() != 2:
        raise ValueError('distmat must be 2-D (Q, G), got shape '
                         f'{tuple(distmat.shape)}')
    check_finite(distmat, 'distmat', allow_posinf=True)
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


def _to_numpy(x: ArrayLike, name: str, shape: tuple) -> np.ndarray:
    """``x`` as float32, required to be finite and of the given shape."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.shape != shape:
        raise ValueError(f'{name} must have shape {shape}, got {x.shape}')
    check_finite(x, name)
    return x


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


def re_ranking(q_g_dist: ArrayLike,
               q_q_dist: ArrayLike,
               g_g_dist: ArrayLike,
               k1: int = 20,
               k2: int = 6,
               lambda_value: float = 0.3) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017), for test time.

    Query and gallery are pooled into N = Q + G points. As in the authors'
    released code, the pooled distances are squared and each row is divided
    by its maximum (d below), and every point's rank list is its row of d
    in increasing order. The k-reciprocal core
    (:func:`mmcc.clustering.k_reciprocal_jaccard`) then gives the Jaccard
    distance d_J with the re-ranking's conventions: R(i, k1) among i's
    k1 + 1 nearest (itself included), R(j, round(k1 / 2)) among j's
    round(k1 / 2) + 1 nearest for the expansion, V[i, j] = exp(-d(i, j))
    normalised over the expanded set, local query expansion over i's k2
    nearest, d_J from the min-sum, in the released code's float32
    arithmetic.

    The result is (1 - lambda_value) * d_J + lambda_value * d between every
    query and every gallery entry. Memory: the pooled (N, N) float32 d, the
    (Q, G) result and O(N k1 k2) sparse rows; time: one partial sort of d
    per row, then the core's sparse stages, whose min-sum runs for the
    query rows only.

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

    Raises:
        ValueError: A distance matrix of the wrong shape or with NaN/Inf
            entries (the row normalisation cannot handle infinity);
            ``k1``, ``k2`` not integers >= 1 (``k2 > k1`` is allowed);
            ``lambda_value`` outside [0, 1].
    """
    k1, k2 = check_int(k1, 'k1'), check_int(k2, 'k2')
    if (isinstance(lambda_value, bool)
            or not isinstance(lambda_value, numbers.Real)
            or not math.isfinite(lambda_value) or not 0 <= lambda_value <= 1):
        raise ValueError(
            f'lambda_value must be a number in [0, 1], got {lambda_value!r}')
    q_g_shape = tuple(np.shape(q_g_dist))
    if len(q_g_shape) != 2:
        raise ValueError(f'q_g_dist must be 2-D (Q, G), got shape {q_g_shape}')
    num_query, num_gallery = q_g_shape
    q_g_dist = _to_numpy(q_g_dist, 'q_g_dist', q_g_shape)
    dist = np.block(
        [[_to_numpy(q_q_dist, 'q_q_dist', (num_query, num_query)), q_g_dist],
         [
             q_g_dist.T,
             _to_numpy(g_g_dist, 'g_g_dist', (num_gallery, num_gallery))
         ]])
    np.square(dist, out=dist)
    # The reference divides columns by their maximum and transposes, which
    # for a symmetric matrix is this row normalisation.
    dist /= np.maximum(dist.max(axis=1, keepdims=True), 1e-12)

    rank = _nearest_neighbours(dist, max(k1 + 1, k2))
    # The re-ranking reference's conventions (see
    # mmcc.clustering.k_reciprocal): R(i) among k1 + 1 entries, exp(-d)
    # weights from d itself, negative d_J (rounding) kept.
    jaccard = k_reciprocal_jaccard(
        dist,
        rank,
        k1,
        k2,
        self_among_k1=False,
        metric='precomputed',
        clip_negative=False,
        rows=np.arange(num_query)).tocoo()
    to_gallery = jaccard.col >= num_query
    # Pairs the core does not store share no column of V: d_J = 1.
    final = np.ones_like(q_g_dist)
    final[jaccard.row[to_gallery],
          jaccard.col[to_gallery] - num_query] = jaccard.data[to_gallery]
    # float32 arithmetic, as the reference's blend.
    final *= np.float32(1 - lambda_value)
    final += dist[:num_query, num_query:] * np.float32(lambda_value)
    return final
