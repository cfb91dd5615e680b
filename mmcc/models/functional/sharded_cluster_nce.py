"""ClusterNCE against a cluster memory split by rows across ranks.

With ``W`` ranks and ``K`` clusters, rank ``r`` holds only the rows
``[r S, min((r + 1) S, K))`` of the memory, ``S = ceil(K / W)`` (see
:func:`shard_range`; the last ranks may hold fewer rows, or none). The
queries, which are small (``B x D`` per rank), travel instead of the memory:

1. every rank all-gathers the queries and labels of all ranks
   (``B_total = W * B_max`` rows, shorter batches padded with label -1);
2. it computes its block of the logits, ``(B_total, S_r) = Q M_r^T / tau``;
3. the softmax over all ``K`` columns is completed with an all-reduced
   (max) row maximum and an all-reduced (sum) row sum of
   ``exp(logit - max)``; the target logit comes from the rank owning the
   label (an all-reduced sum of zeros elsewhere);
4. the loss of rank ``r`` is the mean ClusterNCE over its *own* labelled
   queries, the same quantity as with a replicated memory.

The gradient with respect to the queries is computed in the forward pass:
each rank forms ``(P_r - Y_r) M_r / tau`` for all gathered rows (``P_r`` its
columns of the softmax, ``Y_r`` its columns of the one-hot targets), the
ranks' contributions are all-reduced (sum) and each rank keeps the rows of
its own queries, divided by its number of labelled queries. The backward
pass only multiplies them by the incoming gradient. So the backward issues no
collective (nothing to order against DDP's own all-reduces), nothing of size
``B_total x S_r`` is kept until the backward, and the momentum update may
change the shard in place right after the forward without a copy of it.

All ranks must call :func:`sharded_cluster_nce` together (it is a
collective), with the same ``K`` and temperature, and all with or all
without a gradient to compute (grad mode on and queries requiring grad): the
gradient's all-reduce is skipped otherwise.
"""
import math
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine import dist
from torch import Tensor

__all__ = ['sharded_cluster_nce', 'shard_range', 'ShardedNCEOutput']


class ShardedNCEOutput(NamedTuple):
    """What :func:`sharded_cluster_nce` returns.

    Attributes:
        loss (Tensor): scalar, mean ClusterNCE over this rank's labelled
            queries (0 if it has none); differentiable w.r.t. the queries.
        accuracy (Tensor): scalar, top-1 of this rank's labelled queries
            over all ``K`` clusters (ties go to the lowest cluster index, as
            ``argmax``); not differentiable.
        all_queries (Tensor): (B_total, D) the gathered queries in the
            memory's dtype, detached, ordered by rank (rank ``r``'s rows
            start at ``r * B_max``); e.g. for the momentum update.
        all_labels (Tensor): (B_total,) their labels, -1 for padding rows.
    """
    loss: Tensor
    accuracy: Tensor
    all_queries: Tensor
    all_labels: Tensor


def shard_range(num_rows: int, world_size: int, rank: int) -> Tuple[int, int]:
    """Rows ``[start, stop)`` of a ``num_rows``-row memory held by ``rank``.

    Contiguous blocks of ``ceil(num_rows / world_size)`` rows; the last
    ranks get a shorter block, or an empty one (``start == stop``) when
    ``num_rows`` is small.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f'bad rank {rank} of world size {world_size}')
    size = math.ceil(num_rows / world_size)
    return min(rank * size, num_rows), min((rank + 1) * size, num_rows)


def _all_reduce(tensor: Tensor, op: str, group) -> Tensor:
    """In place (mmengine's: any backend, any device); returns ``tensor``.
    Without a process group, nothing to do."""
    dist.all_reduce(tensor, op=op, group=group)
    return tensor


def gather_padded(queries: Tensor,
                  labels: Tensor,
                  group=None) -> Tuple[Tensor, Tensor, int]:
    """All-gather (B, D) queries and (B,) labels, concatenated by rank.

    Batches of different sizes are padded to the largest, ``B_max``, with
    zero queries labelled -1. Returns the gathered queries
    (W * B_max, D), labels (W * B_max,) and ``B_max``.
    """
    if dist.get_world_size(group) == 1:
        return queries.clone(), labels.clone(), labels.numel()
    size = _all_reduce(
        torch.tensor([labels.numel()], device=labels.device), 'max', group)
    max_size = int(size)
    pad = max_size - labels.numel()
    if pad:
        queries = F.pad(queries, (0, 0, 0, pad))
        labels = F.pad(labels, (0, pad), value=-1)
    return (torch.cat(dist.all_gather(queries.contiguous(), group)),
            torch.cat(dist.all_gather(labels.contiguous(), group)), max_size)


class _ShardedClusterNCE(torch.autograd.Function):
    """Forward: loss, accuracy and the gathered batch; the queries' gradient
    (up to the incoming scalar) is computed here too, see the module's
    docstring."""

    @staticmethod
    def forward(ctx, queries: Tensor, labels: Tensor, shard: Tensor,
                start: int, temperature: float, group,
                with_grad: bool) -> Tuple[Tensor, ...]:
        rank = dist.get_rank(group)
        ctx.query_dtype = queries.dtype
        num_local = queries.size(0)
        # Everything in the memory's dtype (float32 under autocast too): the
        # split softmax is assembled from partial sums.
        with torch.autocast(queries.device.type, enabled=False):
            all_queries, all_labels, max_size = gather_padded(
                queries.detach().to(shard.dtype), labels, group)
            own = slice(rank * max_size, rank * max_size + num_local)
            num_rows, num_cols = all_labels.numel(), shard.size(0)

            logits = all_queries @ shard.t()  # (B_total, S_r)
            logits.div_(temperature)
            in_shard = (all_labels >= start) & (all_labels < start + num_cols)
            local_labels = torch.where(in_shard, all_labels - start, 0)
            if num_cols:
                row_max, row_arg = logits.max(dim=1)
                target = logits.gather(1, local_labels[:, None]).squeeze(1)
                target = torch.where(in_shard, target, 0)
            else:  # a rank holding no row
                row_max = logits.new_full((num_rows, ), float('-inf'))
                row_arg = torch.zeros(
                    num_rows, dtype=torch.long, device=shard.device)
                target = logits.new_zeros(num_rows)
            global_max = _all_reduce(row_max.clone(), 'max', group)
            # Top-1: the lowest cluster index attaining the global maximum
            # (some rank always attains it).
            candidate = torch.where(row_max == global_max, row_arg + start,
                                    torch.iinfo(torch.long).max)
            top1 = _all_reduce(candidate, 'min', group)

            # In place from here on: `logits` becomes exp(logit - max).
            probs = logits.sub_(global_max[:, None]).exp_()
            sums = torch.stack([probs.sum(dim=1), target])
            sums = _all_reduce(sums, 'sum', group)
            denominator, target = sums[0], sums[1]
            row_loss = global_max + denominator.log() - target

            own_labels = all_labels[own]
            labelled = own_labels >= 0
            num_labelled = labelled.sum().clamp(min=1)
            loss = torch.where(labelled, row_loss[own], 0).sum() / num_labelled
            accuracy = ((top1[own] == own_labels) & labelled).sum() / \
                num_labelled

            if with_grad:
                # Softmax minus one-hot over this rank's columns; rows of
                # padding or outliers contribute nothing.
                probs.div_(denominator[:, None])
                rows = torch.nonzero(in_shard).squeeze(1)
                probs[rows, local_labels[rows]] -= 1
                probs.masked_fill_((all_labels < 0)[:, None], 0)
                grad = probs @ shard  # (B_total, D)
                grad = _all_reduce(grad, 'sum', group)
                ctx.save_for_backward(grad[own] / (temperature * num_labelled))
        ctx.mark_non_differentiable(accuracy, all_queries, all_labels)
        return loss, accuracy, all_queries, all_labels

    @staticmethod
    def backward(ctx, grad_loss: Tensor, *unused_grads):
        grad, = ctx.saved_tensors
        return ((grad * grad_loss).to(ctx.query_dtype), None, None, None, None,
                None, None)


def sharded_cluster_nce(queries: Tensor,
                        labels: Tensor,
                        memory_shard: Tensor,
                        shard_start: int,
                        temperature: float,
                        group: Optional[object] = None) -> ShardedNCEOutput:
    """ClusterNCE of this rank's queries against a row-sharded memory.

    A collective: every rank of ``group`` calls it at the same time. Without
    a process group (or with one rank) it is the plain ClusterNCE against
    the whole memory.

    Args:
        queries (Tensor): (B, D) this rank's L2-normalised queries; ``B``
            may differ between ranks. The loss is differentiable w.r.t.
            them (computed in the shard's dtype, autocast or not).
        labels (Tensor): (B,) int64 global cluster ids in ``[0, K)``, or -1
            (ignored).
        memory_shard (Tensor): (S_r, D) the memory rows this rank holds,
            ``S_r >= 0``; receives no gradient.
        shard_start (int): the global index of ``memory_shard``'s first row
            (:func:`shard_range`). The ranks' blocks must tile ``[0, K)``.
        temperature (float): tau; the logits are ``q . phi_k / tau``.
        group (ProcessGroup, optional): Defaults to the default group.

    Returns:
        ShardedNCEOutput: ``loss``, ``accuracy``, ``all_queries``,
        ``all_labels``.
    """
    if queries.dim() != 2 or memory_shard.dim() != 2 or \
            queries.size(1) != memory_shard.size(1):
        raise ValueError(
            'expected queries (B, D) and memory_shard (S, D), got '
            f'{tuple(queries.shape)} and {tuple(memory_shard.shape)}')
    if labels.shape != queries.shape[:1]:
        raise ValueError(f'expected labels of shape ({queries.size(0)},), '
                         f'got {tuple(labels.shape)}')
    labels = labels.to(memory_shard.device, torch.long)
    # (inside the Function's forward, grad mode is always off)
    with_grad = torch.is_grad_enabled() and queries.requires_grad
    return ShardedNCEOutput(
        *_ShardedClusterNCE.apply(queries, labels, memory_shard.detach(
        ), int(shard_start), float(temperature), group, with_grad))
