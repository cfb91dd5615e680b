"""Momentum update of a cluster memory with a batch of queries.

The reference implementation of Cluster Contrast walks over the batch one
sample at a time::

    for b in range(B):                       # batch order
        y = labels[b]
        memory[y] = m * memory[y] + (1 - m) * queries[b]
        memory[y] /= memory[y].norm()

which costs a handful of tiny kernel launches per sample. This module gives
the same result with a number of launches that grows only with the largest
number of samples of one cluster in the batch (mean mode) or not at all (hard
mode).

Why a scan is still needed (mean mode). For one cluster with samples
``q_1 .. q_n`` (in batch order) the rule is ``psi_j = m phi_{j-1} +
(1 - m) q_j``, ``phi_j = psi_j / s_j`` with ``s_j = ||psi_j||``. Unrolled,
``phi_n`` is proportional to ``m^n phi_0 + (1 - m) sum_j m^{n-j} P_{j-1} q_j``
with ``P_j = s_1 ... s_j``: every query's weight depends on the norms of the
*earlier* steps, and (phi_{j-1} being a unit vector) ``s_j^2 = m^2 +
(1 - m)^2 ||q_j||^2 + 2 m (1 - m) phi_{j-1} . q_j`` depends on the state just
before it. Normalising once at
the end would weight the later queries differently, so the norms form a
genuinely sequential (non-linear) recurrence. That recurrence, however, only
couples samples of the *same* cluster; clusters are independent. So we scan
over the *position within the cluster* (at most the largest cluster count of
the batch, e.g. 16 for a PK sampler with K=16) and vectorise each step across
all clusters, instead of looping over the B samples.

Layout trick: clusters are ranked by their count in the batch, largest first,
and the samples are sorted by (position in cluster, cluster rank). Then at
step ``j`` the clusters still active are exactly ranks ``0 .. A_j - 1`` and
their ``j``-th queries are the contiguous slice ``[off_j, off_j + A_j)`` of the
sorted queries, so each step is four small kernels (``lerp_``, norm,
``clamp_``, ``div_``) on views -- no gather, no mask.

Hard mode (the "hardest positive" variant): every cluster present in the
batch is updated once, with its query least similar to the cluster's current
feature (ties: the earliest in the batch, like ``argmin``). The clusters do
not interact, so this is a segmented argmin (two ``scatter_reduce`` calls)
followed by one batched update.
"""
from typing import Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ['momentum_update']

_MODES = ('mean', 'hard')
# Keeps a degenerate update (m * phi == -(1 - m) * q) finite; far below any
# norm met in practice, so it never changes a result.
_EPS = 1e-12


def check_update_args(momentum: float, mode: str) -> float:
    """Validate the update's settings; returns ``momentum`` as a float.

    Raises:
        ValueError: ``mode`` is not ``'mean'`` or ``'hard'``, or
            ``momentum`` lies outside ``[0, 1]``.
    """
    if mode not in _MODES:
        raise ValueError(f'mode must be one of {_MODES}, got {mode!r}')
    momentum = float(momentum)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f'momentum must be in [0, 1], got {momentum}')
    return momentum


def momentum_update(memory: Tensor,
                    queries: Tensor,
                    labels: Tensor,
                    momentum: float,
                    mode: str = 'mean') -> Tensor:
    """Update the cluster memory in place with a batch of queries.

    Args:
        memory (Tensor): (K, D) cluster features, modified in place.
        queries (Tensor): (B, D) L2-normalised query features; cast to the
            memory's dtype and device (e.g. fp16 queries under AMP). Gradients
            are not tracked.
        labels (Tensor): (B,) integer cluster index of each query in
            ``[0, K)``; negative labels (outliers) are ignored.
        momentum (float): m in ``phi <- m phi + (1 - m) q``, in ``[0, 1]``.
        mode (str): ``'mean'`` applies every query, one after the other in
            batch order, renormalising after each (the reference's
            sequential rule, equal up to float rounding); ``'hard'``
            applies, per cluster present, only the query with the lowest
            cosine similarity to the cluster's current feature.

    Returns:
        Tensor: ``memory`` itself (same storage), for chaining.
    """
    momentum = check_update_args(momentum, mode)
    if memory.dim() != 2 or queries.dim() != 2 or \
            queries.shape[1] != memory.shape[1]:
        raise ValueError('expected memory (K, D) and queries (B, D), got '
                         f'{tuple(memory.shape)} and {tuple(queries.shape)}')
    if labels.shape != queries.shape[:1]:
        raise ValueError(f'expected labels of shape ({queries.shape[0]},), '
                         f'got {tuple(labels.shape)}')

    with torch.no_grad():
        queries = queries.detach().to(memory.device, memory.dtype)
        labels = labels.to(memory.device, torch.long)
        if mode == 'mean':
            _sequential_mean_update(memory, queries, labels, momentum)
            return memory
        # Outliers are dropped from the (small) label vector only; queries
        # are read through `rows`, never copied by a boolean mask.
        rows = torch.nonzero(labels >= 0).squeeze(1)
        if rows.numel() > 0:
            _hardest_positive_update(memory, queries, labels, rows, momentum)
    return memory


def _scan_layout(labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray, list]:
    """Order of the mean-mode scan, from the batch's labels (host arrays).

    Args:
        labels: (B,) int cluster ids, negative for outliers.

    Returns:
        ``scan_rows`` (B',) batch indices sorted by (position in cluster,
        cluster rank); ``ranked_clusters`` (C,) cluster ids by decreasing
        count in the batch (ties by id); ``sizes`` their counts (list).
    """
    rows = np.flatnonzero(labels >= 0)
    clusters, group, counts = np.unique(
        labels[rows], return_inverse=True, return_counts=True)
    by_size = np.argsort(-counts, kind='stable')
    cluster_rank = np.empty_like(by_size)
    cluster_rank[by_size] = np.arange(by_size.size)
    rank = cluster_rank[group]  # (B',) per sample
    sizes = counts[by_size]
    # Position of each sample within its cluster, in batch order.
    by_rank = np.argsort(rank, kind='stable')
    starts = np.cumsum(sizes) - sizes
    position = np.empty_like(rank)
    position[by_rank] = np.arange(rows.size) - starts[rank[by_rank]]
    scan_order = np.argsort(position * clusters.size + rank, kind='stable')
    return rows[scan_order], clusters[by_size], sizes.tolist()


def _sequential_mean_update(memory: Tensor, queries: Tensor, labels: Tensor,
                            m: float) -> None:
    """Scan over position-in-cluster, vectorised across clusters.

    Shapes: memory (K, D), queries (B, D), labels (B,), negative labels
    ignored. The scan's layout is computed on the host from the B labels
    (the loop bounds need them there anyway): one device-to-host copy
    instead of a dozen tiny sorting kernels.
    """
    scan_rows, ranked, host_sizes = _scan_layout(labels.cpu().numpy())
    if scan_rows.size == 0:
        return
    device = memory.device
    ranked_clusters = torch.from_numpy(ranked).to(device)
    # Sorted by (position, rank): step j's queries are one contiguous slice
    # whose rows line up with cluster ranks 0 .. A_j - 1.
    scan_queries = queries.index_select(0,
                                        torch.from_numpy(scan_rows).to(device))
    state = memory.index_select(0, ranked_clusters)  # (C, D), a copy
    offset, active = 0, len(host_sizes)
    for step in range(host_sizes[0]):
        while host_sizes[active - 1] <= step:
            active -= 1
        phi = state[:active]
        # phi + (1 - m) (q - phi) = m phi + (1 - m) q, in one kernel.
        phi.lerp_(scan_queries[offset:offset + active], 1 - m)
        phi.div_(
            torch.linalg.vector_norm(phi, dim=1, keepdim=True).clamp_(_EPS))
        offset += active
    memory.index_copy_(0, ranked_clusters, state)


def _hardest_positive_update(memory: Tensor, queries: Tensor, labels: Tensor,
                             rows: Tensor, m: float) -> None:
    """One update per cluster with its least similar query.

    Shapes: memory (K, D), queries (B, D), labels (B,), rows (B',) the
    indices of the queries to apply (labels >= 0), in batch order.
    """
    # Similarity of every query to its cluster's current feature; outliers
    # get a dummy row and are dropped right after (one B x D gather, not
    # two).
    similarity = torch.linalg.vecdot(
        queries, memory.index_select(0, labels.clamp(min=0)))
    similarity = similarity.index_select(0, rows)  # (B',)
    clusters, group = torch.unique(
        labels.index_select(0, rows), return_inverse=True)
    num_clusters, num_samples = clusters.numel(), rows.numel()

    group_min = similarity.new_full((num_clusters, ), float('inf'))
    group_min.scatter_reduce_(0, group, similarity, reduce='amin')
    # Earliest sample attaining its cluster's minimum (argmin's tie rule).
    candidates = torch.where(similarity == group_min.index_select(0, group),
                             torch.arange(num_samples, device=rows.device),
                             num_samples)
    hardest = torch.full((num_clusters, ),
                         num_samples,
                         dtype=torch.long,
                         device=rows.device)
    hardest.scatter_reduce_(0, group, candidates, reduce='amin')

    centres = memory.index_select(0, clusters)  # (C, D), a copy
    centres.lerp_(
        queries.index_select(0, rows.index_select(0, hardest)), 1 - m)
    centres.div_(
        torch.linalg.vector_norm(centres, dim=1, keepdim=True).clamp_(_EPS))
    memory.index_copy_(0, clusters, centres)
