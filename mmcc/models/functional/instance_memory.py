"""An instance memory: one feature per training image, clusters as means.

The instance-level baseline of the Cluster Contrast paper (SpCL's hybrid
memory, Ge et al., NeurIPS 2020, without its un-clustered instances) keeps an
(N, D) memory with one L2-normalised feature per training image. The
prototype of a cluster is the mean of its members' entries, and after each
batch every query updates its own image's entry.
"""
from typing import Optional

import torch
from torch import Tensor

from .momentum_update import momentum_update

__all__ = ['instance_momentum_update', 'cluster_prototypes']


def instance_momentum_update(memory: Tensor, queries: Tensor, indices: Tensor,
                             momentum: float) -> Tensor:
    """Momentum-update the entries of a batch's images, in place.

    For ``b`` in batch order: ``memory[i] <- m memory[i] + (1 - m) q_b``,
    then ``memory[i] /= ||memory[i]||``, with ``i = indices[b]``. An image
    that occurs several times in the batch is updated once per occurrence,
    in batch order, each step starting from the previous one's result.

    That is exactly the cluster memory's mean-mode rule with every image its
    own "cluster" (the sequential recurrence couples only the entries of one
    index), so this is :func:`momentum_update` with the image indices as the
    labels.

    Args:
        memory (Tensor): (N, D) instance features, unit rows; modified in
            place.
        queries (Tensor): (B, D) L2-normalised queries; cast to the memory's
            dtype and device.
        indices (Tensor): (B,) integer row of each query's image in
            ``[0, N)``; negative entries (padding) are ignored.
        momentum (float): m, the weight on the old entry, in ``[0, 1]``;
            0 replaces the entry by the newest query.

    Returns:
        Tensor: ``memory`` itself, for chaining.
    """
    if indices.numel() and int(indices.max()) >= memory.size(0):
        raise ValueError(f'indices must lie below N={memory.size(0)}, got '
                         f'{int(indices.max())}')
    return momentum_update(memory, queries, indices, momentum, mode='mean')


def cluster_prototypes(memory: Tensor,
                       labels: Tensor,
                       num_clusters: int,
                       sizes: Optional[Tensor] = None) -> Tensor:
    """Mean of each cluster's instance entries (not normalised).

    Args:
        memory (Tensor): (N, D) instance features.
        labels (Tensor): (N,) cluster of each instance in ``[0, K)``, -1 for
            an outlier (left out).
        num_clusters (int): K.
        sizes (Tensor, optional): (K,) members of each cluster, if already
            known (they change only when ``labels`` do); counted from
            ``labels`` otherwise.

    Returns:
        Tensor: (K, D) prototypes in the memory's dtype; a cluster without
        members gets a zero row.
    """
    labels = labels.to(memory.device, torch.long)
    # Outliers are summed into an extra row K that is then dropped: no
    # (N', D) gather of the labelled rows on every call.
    rows = torch.where(labels >= 0, labels, num_clusters)
    sums = memory.new_zeros(num_clusters + 1, memory.size(1))
    sums.index_add_(0, rows, memory)
    if sizes is None:
        sizes = torch.bincount(rows, minlength=num_clusters + 1)[:-1]
    sizes = sizes.to(memory.device)
    return sums[:-1] / sizes.clamp(min=1).unsqueeze(1).to(memory.dtype)
