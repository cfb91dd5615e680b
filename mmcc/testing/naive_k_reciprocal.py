"""The k-reciprocal Jaccard distance as the clustering reference computes it.

Per-row Python loops over dense N x N float32 matrices ``V``, ``Vq`` and the
result: O(N^2) memory (two N x N float32 matrices alive at the peak) and
O(N^2) time. It is the naive baseline of the tests and of
``tools/analysis_tools/benchmark_pseudo_labels.py``, against which the
library's sparse :func:`mmcc.clustering.jaccard_distance` must agree bit for
bit; it shares no code with the library's k-reciprocal stages.

The reference's ``use_float16`` storage option (off in its training scripts)
is not reproduced: everything is float32.
"""
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from mmcc.clustering import knn_search


def _reciprocal_neighbours(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k): j in ``rank[i, :k + 1]`` with i in ``rank[j, :k + 1]``.

    In kNN order. ``rank`` holds k1 columns in the clustering reference, so
    ``[:k1 + 1]`` takes all of them.
    """
    forward = rank[i, :k + 1]
    backward = rank[forward, :k + 1]
    return forward[(backward == i).any(axis=1)]


def _softmax_row(x: torch.Tensor, i: int, cols: np.ndarray) -> np.ndarray:
    """softmax over j in ``cols`` of -(2 - 2 <x_i, x_j>), float32."""
    # The reference multiplies the (1, D) row by the (D, m) members with
    # torch.mm. A batch of one through bmm does the same float32 arithmetic
    # and rounds like the library's batched product (mm's kernel for small
    # m may differ in the last bit).
    members = x[torch.from_numpy(cols).to(x.device)]
    sims = torch.bmm(x[i].view(1, 1, -1), members.T.unsqueeze(0))
    return F.softmax(-(2 - 2 * sims), dim=2)[0, 0].cpu().numpy()


def naive_jaccard_distance(features: Union[np.ndarray, torch.Tensor],
                           k1: int = 30,
                           k2: int = 6,
                           rank: Optional[np.ndarray] = None) -> np.ndarray:
    """Dense k-reciprocal Jaccard distance, loop by loop.

    Args:
        features: (N, D) L2-normalised embeddings, array or tensor.
        k1: Size of the kNN lists, the point itself included (clamped to N).
        k2: Size of the local query expansion, itself included.
        rank: Optional (N, >= min(k1, N)) kNN lists, the point itself first
            (default: an exact :func:`mmcc.clustering.knn_search`, the
            reference's search).

    Returns:
        (N, N) float32 d_J; exactly 1 for pairs whose expanded
        neighbourhoods do not overlap.
    """
    if isinstance(features, torch.Tensor):
        x = features.detach().float().contiguous()
    else:
        x = torch.from_numpy(np.ascontiguousarray(features, np.float32))
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, 0), np.float32)
    if rank is None:
        rank, _ = knn_search(x, min(k1, n), method='exact')
    rank = np.asarray(rank, dtype=np.int64)[:, :min(k1, n)]

    half = int(np.around(k1 / 2))  # round half to even
    full_sets = [_reciprocal_neighbours(rank, i, k1) for i in range(n)]
    half_sets = [_reciprocal_neighbours(rank, i, half) for i in range(n)]
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        expanded = full_sets[i]
        for c in full_sets[i]:
            candidate = half_sets[c]
            shared = np.intersect1d(candidate, full_sets[i])
            if len(shared) > 2 / 3 * len(candidate):
                expanded = np.append(expanded, candidate)
        expanded = np.unique(expanded)
        v[i, expanded] = _softmax_row(x, i, expanded)
    del full_sets, half_sets

    if k2 != 1:
        expanded_v = np.zeros_like(v)
        for i in range(n):
            expanded_v[i] = np.mean(v[rank[i, :k2]], axis=0)
        v = expanded_v
        del expanded_v

    holders = [np.flatnonzero(v[:, c]) for c in range(n)]
    dist = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        s = np.zeros(n, dtype=np.float32)
        for c in np.flatnonzero(v[i]):
            s[holders[c]] += np.minimum(v[i, c], v[holders[c], c])
        dist[i] = 1 - s / (2 - s)
    del holders, v
    dist[dist < 0] = 0
    return dist
