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
from ..functional import check_update_args, momentum_update


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

    Args:
        feat_dim (int, optional): D, the query dimension. None lets
            :class:`ReIDModel` set it from its neck. Defaults to None.
        momentum (float): m in ``phi <- m phi + (1 - m) q``. Defaults to 0.1.
        temperature (float): tau. Defaults to 0.05.
        update_mode (str): ``'mean'`` (every query, in batch order) or
            ``'hard'`` (per cluster, its least similar query). See
            :func:`mmcc.models.functional.momentum_update`.
        loss (dict | nn.Module): The loss on the logits. Defaults to
            ``dict(type='ClusterNCELoss')``.
        init_cfg (dict, optional): Unused (nothing to initialise).
    """

    def __init__(self,
                 feat_dim: Optional[int] = None,
                 momentum: float = 0.1,
                 temperature: float = 0.05,
                 update_mode: str = 'mean',
                 loss: Union[dict, nn.Module] = dict(type='ClusterNCELoss'),
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
        # Persistent, so that a resumed run gets back its memory; their sizes
        # change with every clustering (see _load_from_state_dict).
        self.register_buffer('memory', torch.zeros(0, feat_dim))
        self.register_buffer('sample_labels', torch.zeros(0, dtype=torch.long))

    @property
    def num_clusters(self) -> int:
        return self.memory.size(0)

    @torch.no_grad()
    def reset(self, centroids: Union[Tensor, np.ndarray],
              sample_labels: Union[Tensor, np.ndarray, Sequence[int]]) -> None:
        """Replace the memory and the per-sample pseudo-labels.

        Args:
            centroids (Tensor | ndarray): (K, D) cluster features, e.g. the
                mean feature of each cluster; L2-normalised here.
            sample_labels (Tensor | ndarray | sequence): (N,) pseudo-label of
                each training sample in ``[0, K)``, or -1 for an outlier.
        """
        centroids = torch.as_tensor(centroids)
        sample_labels = torch.as_tensor(sample_labels).long().flatten()
        if centroids.dim() != 2 or centroids.size(1) != self.feat_dim:
            raise ValueError(f'expected centroids (K, {self.feat_dim}), '
                             f'got {tuple(centroids.shape)}')
        num_clusters = centroids.size(0)
        if sample_labels.numel() and (int(sample_labels.max()) >= num_clusters
                                      or int(sample_labels.min()) < -1):
            raise ValueError(f'sample_labels must lie in [-1, {num_clusters})'
                             f', got [{int(sample_labels.min())}, '
                             f'{int(sample_labels.max())}]')
        memory = self.memory
        # New tensors rather than resize_(): a resize would reallocate a
        # storage that a state_dict snapshot may still share. DDP re-reads
        # the module's buffers before each broadcast, so it follows.
        self.memory = F.normalize(
            centroids.to(memory.device, memory.dtype), dim=1)
        self.sample_labels = sample_labels.to(self.sample_labels.device)

    def forward(self, feats: Union[Tensor, Tuple[Tensor]]) -> Tensor:
        """(B, D) features -> (B, K) logits ``q . phi_k / tau``; no update."""
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
            key = prefix + name
            current = self._buffers[name]
            incoming = state_dict.get(key)
            if isinstance(incoming, Tensor) \
                    and incoming.dim() == current.dim() \
                    and incoming.shape[1:] == current.shape[1:] \
                    and incoming.shape != current.shape:
                self._buffers[name] = current.new_empty(incoming.shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return (f'feat_dim={self.feat_dim}, num_clusters={self.num_clusters}, '
                f'momentum={self.momentum}, temperature={self.temperature}, '
                f'update_mode={self.update_mode!r}')
