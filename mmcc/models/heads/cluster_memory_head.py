"""The cluster memory: one L2-normalised feature per pseudo-identity."""
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine import dist
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmcc.registry import MODELS
from mmcc.utils import sample_index
from ..functional import (check_update_args, momentum_update, shard_range,
                          sharded_cluster_nce)
from ..losses import ClusterNCELoss


@MODELS.register_module()
class ClusterMemoryHead(BaseModule):
    """Cluster memory with the ClusterNCE loss and its momentum update.

    The head holds two buffers, both empty until the first :meth:`reset`
    (called by ``PseudoLabelHook`` after every clustering):

    - ``memory`` (K, D) float: the cluster features phi_k, unit norm.
    - ``sample_labels`` (N,) int64: the pseudo-label of every training sample
      by dataset index (``sample_idx``), -1 for outliers.

    Training labels are looked up in ``sample_labels``; the true identities
    (``gt_label``) are never read. :meth:`loss` computes the logits
    ``q . phi_k / tau`` against the memory *as it was before this batch* and
    then updates the memory with the batch's queries, the way the reference
    does in its backward pass; no hook or optimiser is involved. The memory
    is not a parameter and receives no gradient.

    **Sharded memory** (``sharded=True``, Partial-FC style). With a world
    of ``W > 1`` ranks, rank ``r`` holds only the rows ``[r S, min((r + 1)
    S, K))`` of the memory, ``S = ceil(K / W)`` (possibly none): ``memory``
    is then that (S_r, D) block, :meth:`reset` keeps only it, and
    :attr:`num_clusters` is still ``K``. :meth:`loss` all-gathers the
    batch's queries and labels, and returns the same loss as the replicated
    head on each rank (ClusterNCE over the rank's own queries; see
    :func:`mmcc.models.functional.sharded_cluster_nce`), the same gradient
    and top-1; each rank then applies the momentum update to its own rows
    from the gathered batch, which leaves the blocks equal to the
    replicated memory's rows (both update modes). The memory per rank is
    ``K D / W`` instead of ``K D``, and no (K, D) copy is made per step; the
    logits stay ``B_total x S_r`` per rank, as large as the replicated
    ``B x K``. The loss is computed in the memory's dtype, autocast or not.
    With one rank, ``sharded=True`` runs the replicated code.

    In sharded mode ``memory`` is a plain tensor attribute, not a buffer:
    moved by ``.to()``/``.cuda()`` like one, but invisible to every
    mechanism that synchronises buffers across ranks (DDP's
    ``broadcast_buffers``, mmengine's ``SyncBuffersHook``), which would
    otherwise average or overwrite different blocks. Checkpoints still hold
    the full (K, D) ``memory`` (interchangeable with the replicated head's;
    loading keeps the rank's block, for any world size). mmengine takes the
    state dict on rank 0 only (``Runner.save_checkpoint`` is
    ``master_only``), so the blocks cannot be collected there: every rank
    must call :meth:`prepare_state_dict` (a collective) first, which
    ``SyncNormBuffersHook`` does after every training epoch, before the
    checkpoint hook; rank 0 then keeps a host copy of the full memory until
    the memory next changes. A state dict asked for while that copy is
    missing or stale (e.g. an iteration-based checkpoint in the middle of an
    epoch) raises ``RuntimeError`` rather than save a wrong memory.
    :meth:`forward` (logits against the whole memory) is not available
    with ``W > 1`` blocks.

    Args:
        feat_dim (int, optional): D, the query dimension. None lets
            :class:`ReIDModel` set it from its neck. Defaults to None.
        momentum (float): m in ``phi <- m phi + (1 - m) q``. Defaults to 0.1.
        temperature (float): tau. Defaults to 0.05.
        update_mode (str): ``'mean'`` (every query, in batch order) or
            ``'hard'`` (per cluster, its least similar query). See
            :func:`mmcc.models.functional.momentum_update`.
        loss (dict | nn.Module): The loss on the logits. Defaults to
            ``dict(type='ClusterNCELoss')``; a sharded head supports only
            that loss (its ``loss_weight`` is applied).
        sharded (bool): Split the memory by rows across the ranks (see
            above). Defaults to False.
        init_cfg (dict, optional): Unused (nothing to initialise).
    """

    # Kept consistent across ranks by the head itself (every rank applies
    # the same update, or updates its own block): SyncNormBuffersHook does
    # not average them.
    unsynced_buffers = ('memory', 'sample_labels')

    def __init__(self,
                 feat_dim: Optional[int] = None,
                 momentum: float = 0.1,
                 temperature: float = 0.05,
                 update_mode: str = 'mean',
                 loss: Union[dict, nn.Module] = dict(type='ClusterNCELoss'),
                 sharded: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if feat_dim is None:
            raise ValueError(
                'ClusterMemoryHead needs feat_dim; inside a ReIDModel it is '
                "taken from the neck's output size, elsewhere pass it")
        momentum = check_update_args(momentum, update_mode)
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        self.feat_dim = feat_dim
        self.momentum = momentum
        self.temperature = temperature
        self.update_mode = update_mode
        self.loss_module = loss if isinstance(loss, nn.Module) else \
            MODELS.build(loss)
        self.sharded = bool(sharded)
        if self.sharded:
            if not isinstance(self.loss_module, ClusterNCELoss):
                raise ValueError('a sharded ClusterMemoryHead computes the '
                                 'ClusterNCE loss itself; got the loss '
                                 f'{type(self.loss_module).__name__}')
            # A plain attribute, not a buffer (see the class docstring);
            # _apply moves it, _save/_load_from_state_dict persist it.
            self.memory = torch.zeros(0, feat_dim)
            self._num_clusters = 0
            self._shard_start = 0  # global index of memory[0]
            self._shard_world = 1  # the world size the block was cut for
            self._version = 0  # bumped whenever the memory changes
            self._gathered: Optional[Tuple[int, Tensor]] = None
        else:
            # Persistent, so that a resumed run gets back its memory; its
            # size changes with every clustering (_load_from_state_dict).
            self.register_buffer('memory', torch.zeros(0, feat_dim))
        self.register_buffer('sample_labels', torch.zeros(0, dtype=torch.long))

    @property
    def num_clusters(self) -> int:
        """K, the number of clusters (of all ranks' blocks together)."""
        return self._num_clusters if self.sharded else self.memory.size(0)

    @torch.no_grad()
    def reset(self, centroids: Union[Tensor, np.ndarray],
              sample_labels: Union[Tensor, np.ndarray, Sequence[int]]) -> None:
        """Replace the memory and the per-sample pseudo-labels.

        Args:
            centroids (Tensor | ndarray): (K, D) cluster features, e.g. the
                mean feature of each cluster; L2-normalised here. The same
                on every rank; a sharded head keeps its block of rows.
            sample_labels (Tensor | ndarray | sequence): (N,) pseudo-label of
                each training sample in ``[0, K)``, or -1 for an outlier.
        """
        centroids, sample_labels = self._checked_reset_args(
            centroids, sample_labels, self.feat_dim)
        num_clusters = centroids.size(0)
        memory = self.memory
        if self.sharded:
            start, stop = self._set_shard(num_clusters)
            centroids = centroids[start:stop]
        # New tensors rather than resize_(): a resize would reallocate a
        # storage that a state_dict snapshot may still share. DDP re-reads
        # the module's buffers before each broadcast, so it follows.
        self.memory = F.normalize(
            centroids.to(memory.device, memory.dtype), dim=1)
        self.sample_labels = sample_labels.to(self.sample_labels.device)

    @staticmethod
    def _checked_reset_args(centroids, sample_labels,
                            feat_dim: int) -> Tuple[Tensor, Tensor]:
        """``reset``'s arguments as tensors: (K, D) centroids and (N,) int64
        labels in ``[-1, K)``; ``ValueError`` otherwise."""
        centroids = torch.as_tensor(centroids)
        sample_labels = torch.as_tensor(sample_labels).long().flatten()
        if centroids.dim() != 2 or centroids.size(1) != feat_dim:
            raise ValueError(f'expected centroids (K, {feat_dim}), '
                             f'got {tuple(centroids.shape)}')
        num_clusters = centroids.size(0)
        if sample_labels.numel() and (int(sample_labels.max()) >= num_clusters
                                      or int(sample_labels.min()) < -1):
            raise ValueError(f'sample_labels must lie in [-1, {num_clusters})'
                             f', got [{int(sample_labels.min())}, '
                             f'{int(sample_labels.max())}]')
        return centroids, sample_labels

    def forward(self, feats: Union[Tensor, Tuple[Tensor]]) -> Tensor:
        """(B, D) features -> (B, K) logits ``q . phi_k / tau``; no update.

        Not available for a memory split across ranks (``RuntimeError``).
        """
        if self._split():
            raise RuntimeError(
                'ClusterMemoryHead.forward needs the whole memory, and this '
                'sharded head holds only its block of rows; gather_memory() '
                'returns the whole memory')
        queries = F.normalize(self._last(feats), dim=1)
        return queries @ self.memory.t() / self.temperature

    def loss(self, feats: Union[Tensor, Tuple[Tensor]], data_samples: Sequence,
             **kwargs) -> Dict[str, Tensor]:
        """ClusterNCE loss of a batch, then the momentum update.

        Args:
            feats (Tensor | tuple): (B, D) neck features (not normalised), or
                a tuple whose last item is.
            data_samples (Sequence): B data samples carrying ``sample_idx``
                (an attribute/metainfo of mmengine data elements, or a key).

        Returns:
            dict: ``loss`` (scalar, differentiable w.r.t. ``feats``) and
            ``acc`` (top-1 of the logits against the pseudo-labels; logged
            only).
        """
        if self.num_clusters == 0:
            raise RuntimeError(
                'ClusterMemoryHead is empty: call reset(centroids, '
                'sample_labels) (PseudoLabelHook does) before training')
        queries = F.normalize(self._last(feats), dim=1)
        labels = self._pseudo_labels(data_samples).to(queries.device)
        if self._split():
            return self._sharded_loss(queries, labels)

        # The momentum update below writes into `memory` in place; the matmul
        # keeps its operand for the backward pass (grad_q = grad_logits .
        # memory), so it gets a snapshot. Updating here rather than after the
        # backward needs no hook and gives the same result: the logits and
        # their gradient both see the pre-update memory, as in the reference.
        logits = queries @ self.memory.clone().t() / self.temperature
        losses = dict(loss=self.loss_module(logits, labels))
        with torch.no_grad():
            labelled = labels >= 0
            correct = (logits.argmax(dim=1) == labels) & labelled
            losses['acc'] = correct.sum() / labelled.sum().clamp(min=1)
            # under autocast the queries may be bfloat16/float16
            self._update_memory(queries.detach().to(self.memory.dtype), labels)
        if self.sharded:
            self._changed()
        return losses

    def _sharded_loss(self, queries: Tensor,
                      labels: Tensor) -> Dict[str, Tensor]:
        """:meth:`loss` with the memory split across the ranks."""
        out = sharded_cluster_nce(queries, labels, self.memory,
                                  self._shard_start, self.temperature)
        losses = dict(
            loss=self.loss_module.loss_weight * out.loss, acc=out.accuracy)
        with torch.no_grad():
            # This rank's rows, from the whole gathered batch (in the order
            # the replicated head applies it); other labels are ignored.
            start = self._shard_start
            local = out.all_labels - start
            local[(local < 0) | (local >= self.memory.size(0))] = -1
            momentum_update(self.memory, out.all_queries, local, self.momentum,
                            self.update_mode)
        self._changed()
        return losses

    def _update_memory(self, queries: Tensor, labels: Tensor) -> None:
        """Every rank applies the same update with the whole global batch."""
        if dist.get_world_size() > 1:
            queries, labels = self._gather_batch(queries, labels)
        momentum_update(self.memory, queries, labels, self.momentum,
                        self.update_mode)

    @staticmethod
    def _gather_batch(queries: Tensor,
                      labels: Tensor) -> Tuple[Tensor, Tensor]:
        """All-gather (B, D) queries and (B,) labels, concatenated by rank.

        Ranks may hold batches of different sizes (a last, partial batch):
        they are padded to the largest with label -1, which the update
        ignores.
        """
        size = torch.tensor([labels.numel()], device=labels.device)
        dist.all_reduce(size, op='max')
        pad = int(size) - labels.numel()
        if pad:
            queries = F.pad(queries, (0, 0, 0, pad))
            labels = F.pad(labels, (0, pad), value=-1)
        return (torch.cat(dist.all_gather(queries)),
                torch.cat(dist.all_gather(labels)))

    def _split(self) -> bool:
        """Whether the memory is split across more than one rank."""
        if not self.sharded:
            return False
        world_size = dist.get_world_size()
        if self._num_clusters and world_size != self._shard_world:
            raise RuntimeError(
                f'this sharded ClusterMemoryHead holds its block for a world '
                f'of {self._shard_world} ranks, but the world has '
                f'{world_size}: call reset() or load a checkpoint again')
        return world_size > 1

    def _set_shard(self, num_clusters: int) -> Tuple[int, int]:
        """Record that this rank now holds its block of ``num_clusters``
        rows; returns the block's rows ``[start, stop)``."""
        world_size, rank = dist.get_world_size(), dist.get_rank()
        start, stop = shard_range(num_clusters, world_size, rank)
        self._num_clusters = num_clusters
        self._shard_start, self._shard_world = start, world_size
        self._changed()
        return start, stop

    def _changed(self) -> None:
        """The memory changed: a gathered copy is stale."""
        self._version += 1
        self._gathered = None

    @torch.no_grad()
    def gather_memory(self, dst: Optional[int] = 0) -> Optional[Tensor]:
        """The whole (K, D) memory on the host, gathered from the blocks.

        A collective for a sharded head split across ranks: every rank must
        call it. Rank ``dst`` (every rank if None) gets the memory and keeps
        it for :meth:`state_dict` until the memory next changes; the other
        ranks get None. Without a split, it is a host copy of ``memory``.
        Do not modify the returned tensor.
        """
        if not self._split():
            return self.memory.detach().cpu().clone()
        world_size, rank = dist.get_world_size(), dist.get_rank()
        keep = dst is None or rank == dst
        shape = (self._num_clusters, self.feat_dim)
        full = torch.empty(shape, dtype=self.memory.dtype) if keep else None
        for src in range(world_size):
            start, stop = shard_range(self._num_clusters, world_size, src)
            if start == stop:
                continue
            # one block at a time: no rank ever holds (K, D) on its device
            block = self.memory.detach() if src == rank else \
                self.memory.new_empty(stop - start, self.feat_dim)
            dist.broadcast(block, src=src)
            if keep:
                full[start:stop] = block.cpu()
        if keep:
            self._gathered = (self._version, full)
        return full

    def prepare_state_dict(self) -> None:
        """Collective (every rank): make the next :meth:`state_dict` on
        rank 0 hold the whole memory of a head split across ranks (mmengine
        saves checkpoints from rank 0 alone). A no-op otherwise."""
        if self._split():
            self.gather_memory(dst=0)

    def _full_memory(self) -> Tensor:
        """The (K, D) memory for a state dict (see the class docstring)."""
        if not self._split() or self._num_clusters == 0:
            return self.memory
        if self._gathered is not None and \
                self._gathered[0] == self._version:
            return self._gathered[1]
        raise RuntimeError(
            'the state dict of a sharded ClusterMemoryHead needs the whole '
            'memory: call prepare_state_dict() (or gather_memory()) on every '
            'rank after the last update and before state_dict() '
            '(SyncNormBuffersHook does so after each training epoch; '
            'iteration-based checkpoints are not supported)')

    def _apply(self, fn, *args, **kwargs):
        module = super()._apply(fn, *args, **kwargs)
        if self.sharded:  # a buffer in all but name
            self.memory = fn(self.memory)
        return module

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self.sharded:
            memory = self._full_memory()
            destination[prefix + 'memory'] = \
                memory if keep_vars else memory.detach()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _pseudo_labels(self, data_samples: Sequence) -> Tensor:
        """(B,) int64 pseudo-labels, looked up by ``sample_idx``."""
        indices = [sample_index(sample) for sample in data_samples]
        indices = torch.as_tensor(
            indices, dtype=torch.long, device=self.sample_labels.device)
        return self.sample_labels[indices]

    @staticmethod
    def _last(feats: Union[Tensor, Tuple[Tensor]]) -> Tensor:
        return feats[-1] if isinstance(feats, (tuple, list)) else feats

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        # The number of clusters (and of samples) differs from run to run and
        # epoch to epoch: take the checkpoint's sizes before the shape check.
        # A different feature dimension is still reported as a mismatch.
        for name in ('memory', 'sample_labels'):
            if name not in self._buffers:  # a sharded memory
                continue
            key = prefix + name
            current = self._buffers[name]
            incoming = state_dict.get(key)
            if isinstance(incoming, Tensor) \
                    and incoming.dim() == current.dim() \
                    and incoming.shape[1:] == current.shape[1:] \
                    and incoming.shape != current.shape:
                self._buffers[name] = current.new_empty(incoming.shape)
        if self.sharded:
            self._load_block(state_dict, prefix, strict, missing_keys,
                             error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if self.sharded and prefix + 'memory' in unexpected_keys:
            unexpected_keys.remove(prefix + 'memory')

    def _load_block(self, state_dict, prefix, strict, missing_keys,
                    error_msgs) -> None:
        """Keep this rank's block of a state dict's (K, D) memory."""
        key = prefix + 'memory'
        incoming = state_dict.get(key)
        if incoming is None:
            if strict:
                missing_keys.append(key)
            return
        if not isinstance(incoming, Tensor) or incoming.dim() != 2 or \
                incoming.size(1) != self.feat_dim:
            shape = tuple(incoming.shape) if isinstance(
                incoming, Tensor) else type(incoming).__name__
            error_msgs.append(
                f'size mismatch for {key}: copying a param with shape '
                f'{shape} from checkpoint, the shape in current model is '
                f'(K, {self.feat_dim}).')
            return
        start, stop = self._set_shard(incoming.size(0))
        # a copy: the update writes in place
        self.memory = incoming[start:stop].to(
            self.memory.device, self.memory.dtype, copy=True)

    def extra_repr(self) -> str:
        return (f'feat_dim={self.feat_dim}, num_clusters={self.num_clusters}, '
                f'momentum={self.momentum}, temperature={self.temperature}, '
                f'update_mode={self.update_mode!r}' +
                (', sharded=True' if self.sharded else ''))
