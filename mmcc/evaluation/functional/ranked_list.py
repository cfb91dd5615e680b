"""The top-k gallery entries of re-ID queries, as the protocol ranks them.

What a ranked-list picture shows (``tools/test.py --show-dir``): for each
query, its nearest *valid* gallery entries in the order
:func:`mmcc.evaluation.functional.rank_metrics` scores them. The entries
that protocol ignores are left out: gallery entries of the query's identity
taken by the query's camera, and junk (identity -1). Distractors
(identity 0) stay, as wrong matches.

Ties are shown the way the metric counts them, against the query: among
entries at the same distance the wrong matches come first (then the lower
gallery index). A query is a CMC top-1 hit exactly when its first entry is
a match and the second (if any) is farther: the metric gives entries at
the same distance the same, worse rank.
"""
from typing import List, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch

from mmcc.utils.checks import check_finite, check_int

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]


class RankedList(NamedTuple):
    """One query's top-k valid gallery entries, nearest first.

    Attributes:
        indices (np.ndarray): (k, ) int64 gallery indices (columns of the
            distance matrix).
        distances (np.ndarray): (k, ) their distances to the query.
        matches (np.ndarray): (k, ) bool, whether each entry has the
            query's identity.
    """
    indices: np.ndarray
    distances: np.ndarray
    matches: np.ndarray


def _as_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def ranked_lists(distmat: ArrayLike,
                 query_ids: ArrayLike,
                 gallery_ids: ArrayLike,
                 query_cams: ArrayLike,
                 gallery_cams: ArrayLike,
                 topk: int = 10,
                 queries: Optional[Sequence[int]] = None) -> List[RankedList]:
    """Rank the valid gallery entries of some queries and keep the top k.

    A query whose valid gallery has fewer than ``topk`` entries gets them
    all. Each list costs one pass over its query's row of ``distmat`` plus
    a sort of the entries no farther than its k-th nearest.

    Args:
        distmat (np.ndarray | Tensor): (Q, G) distances, smaller is closer;
            no NaN (``+inf`` is allowed and ranks last).
        query_ids (array-like): (Q, ) integer identities of the queries.
        gallery_ids (array-like): (G, ) integer identities of the gallery;
            -1 marks junk entries.
        query_cams (array-like): (Q, ) camera indices of the queries.
        gallery_cams (array-like): (G, ) camera indices of the gallery.
        topk (int): The length k of the lists. Defaults to 10.
        queries (Sequence[int], optional): The queries (row indices) to
            rank, in the order of the result. Defaults to all of them.

    Returns:
        list[RankedList]: One per query in ``queries``.

    Raises:
        ValueError: ``distmat`` not 2-D or holding NaN or -inf, ``topk``
            not an integer >= 1, or ids/cameras not matching its shape.
    """
    topk = check_int(topk, 'topk')
    distmat = _as_numpy(distmat)
    if distmat.ndim != 2:
        raise ValueError('distmat must be 2-D (Q, G), got shape '
                         f'{distmat.shape}')
    check_finite(distmat, 'distmat', allow_posinf=True)
    num_query, num_gallery = distmat.shape
    query_ids, query_cams = (
        _as_numpy(x).reshape(-1).astype(np.int64)
        for x in (query_ids, query_cams))
    gallery_ids, gallery_cams = (
        _as_numpy(x).reshape(-1).astype(np.int64)
        for x in (gallery_ids, gallery_cams))
    if not len(query_ids) == len(query_cams) == num_query:
        raise ValueError('query_ids and query_cams need one entry per row '
                         f'of distmat ({num_query})')
    if not len(gallery_ids) == len(gallery_cams) == num_gallery:
        raise ValueError('gallery_ids and gallery_cams need one entry per '
                         f'column of distmat ({num_gallery})')
    if queries is None:
        queries = range(num_query)

    not_junk = gallery_ids != -1
    lists = []
    for q in queries:
        q = int(q)
        same_id = gallery_ids == query_ids[q]
        valid = np.flatnonzero(not_junk
                               & ~(same_id & (gallery_cams == query_cams[q])))
        dist = distmat[q, valid]
        k = min(topk, len(valid))
        if k < len(valid):
            # every entry no farther than the k-th nearest (ties included)
            near = dist <= np.partition(dist, k - 1)[k - 1]
            valid, dist = valid[near], dist[near]
        match = same_id[valid]
        # by distance, then wrong matches first, then gallery index
        order = np.lexsort((valid, match, dist))[:k]
        lists.append(
            RankedList(
                indices=valid[order].astype(np.int64),
                distances=dist[order],
                matches=match[order]))
    return lists
