"""The instance memory: one feature per training image, clusters as means."""
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine import dist
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmcc.registry import MODELS
from mmcc.utils import sample_index
from ..functional import (check_update_args, cluster_prototypes,
                          instance_momentum_update)
from .cluster_memory_head import ClusterMemoryHead


@MODELS.register_module()
class InstanceMemoryHead(BaseModule):
    """Instance-level memory baseline with the ClusterNCE loss.

    The baseline the Cluster Contrast paper compares its cluster memory with
    (SpCL's memory, Ge et al., NeurIPS 2020, without SpCL's un-clustered
    instances): every training image keeps its own feature, and a cluster is
    represented by the mean of its members' features. The interface is
    :class:`ClusterMemoryHead`'s, so either head trains under the same
    hooks and loss. The head holds three buffers, empty until the first
    :meth:`reset`:

    - ``instance_memory`` (N, D) float: one unit-norm feature per training
      image, by dataset index (``sample_idx``).
    - ``sample_labels`` (N,) int64: the pseudo-label of every image, -1 for
      outliers.
    - ``cluster_sizes`` (K,) int64: members per cluster (labels change only
      at :meth:`reset`; the buffer also gives K back after a resume).

    :meth:`loss` computes the logits ``q . c_k / tau`` against the cluster
    prototypes ``c_k = mean of the entries of cluster k`` *as they were
    before this batch*, then momentum-updates the entry of each image of
    the batch with its query. The prototypes are **not** renormalised: as
    in SpCL, the logit is the mean of the query's similarities to the
    members, which equals its similarity to the plain mean; a spread-out
    cluster thus has a shorter prototype and smaller logits. A cluster of
    one image has a unit-norm prototype, so with singleton clusters this
    head and :class:`ClusterMemoryHead` agree.

    ``needs_features = True`` tells ``PseudoLabelHook`` to pass the
    clustering pass's (N, D) embeddings to :meth:`reset`, which initialises
    the entries from them.

    Args:
        feat_dim (int, optional): D, the query dimension. None lets
            :class:`ReIDModel` set it from its neck. Defaults to None.
        momentum (float): m in ``v_i <- m v_i + (1 - m) q``, the weight on
            the old entry (SpCL's convention and value). Defaults to 0.2.
        temperature (float): tau. Defaults to 0.05.
        loss (dict | nn.Module): The loss on the logits. Defaults to
            ``dict(type='ClusterNCELoss')``.
        init_cfg (dict, optional): Unused (nothing to initialise).
    """

    needs_features = True
    # Kept equal across ranks by the head itself (every rank applies the
    # same update with the gathered batch): a hook that averages buffers
    # across ranks (SyncNormBuffersHook) leaves them alone.
    unsynced_buffers = ('instance_memory', 'sample_labels', 'cluster_sizes')

    def __init__(self,
                 feat_dim: Optional[int] = None,
                 momentum: float = 0.2,
                 temperature: float = 0.05,
                 loss: Union[dict, nn.Module] = dict(type='ClusterNCELoss'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if feat_dim is None:
            raise ValueError(
                'InstanceMemoryHead needs feat_dim; inside a ReIDModel it is '
                "taken from the neck's output size, elsewhere pass it")
        momentum = check_update_args(momentum, 'mean')
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        self.feat_dim = feat_dim
        self.momentum = momentum
        self.temperature = temperature
        self.loss_module = loss if isinstance(loss, nn.Module) else \
            MODELS.build(loss)
        # Persistent, so that a resumed run gets back its memory; their sizes
        # change with every clustering (see _load_from_state_dict).
        self.register_buffer('instance_memory', torch.zeros(0, feat_dim))
        self.register_buffer('sample_labels', torch.zeros(0, dtype=torch.long))
        self.register_buffer('cluster_sizes', torch.zeros(0, dtype=torch.long))

    @property
    def num_clusters(self) -> int:
        return self.cluster_sizes.numel()

    @torch.no_grad()
    def reset(self,
              centroids: Union[Tensor, np.ndarray],
              sample_labels: Union[Tensor, np.ndarray, Sequence[int]],
              features: Union[Tensor, np.ndarray, None] = None) -> None:
        """Replace the instance memory and the per-sample pseudo-labels.

        Args:
            centroids (Tensor | ndarray): (K, D) cluster features; only their
                number K and dimension are used (the prototypes are always
                the means of the instance entries).
            sample_labels (Tensor | ndarray | sequence): (N,) pseudo-label of
                each training sample in ``[0, K)``, or -1 for an outlier.
            features (Tensor | ndarray): (N, D) embedding of every training
                sample, by dataset index; L2-normalised here. Required.
        """
        if features is None:
            raise ValueError(
                'InstanceMemoryHead.reset needs the (N, D) features of the '
                'training samples; PseudoLabelHook passes them to heads with '
                'needs_features = True')
        centroids, sample_labels = ClusterMemoryHead._checked_reset_args(
            centroids, sample_labels, self.feat_dim)
        features = torch.as_tensor(features)
        if features.shape != (sample_labels.numel(), self.feat_dim):
            raise ValueError(f'expected features ({sample_labels.numel()}, '
                             f'{self.feat_dim}), one per sample label, got '
                             f'{tuple(features.shape)}')
        num_clusters = centroids.size(0)
        memory = self.instance_memory
        # New tensors rather than resize_() (see ClusterMemoryHead.reset).
        self.instance_memory = F.normalize(
            features.to(memory.device, memory.dtype), dim=1)
        self.sample_labels = sample_labels.to(self.sample_labels.device)
        labelled = sample_labels[sample_labels >= 0]
        self.cluster_sizes = torch.bincount(
            labelled, minlength=num_clusters).to(self.cluster_sizes.device)

    def prototypes(self) -> Tensor:
        """(K, D) cluster prototypes: the mean of each cluster's entries."""
        return cluster_prototypes(self.instance_memory, self.sample_labels,
                                  self.num_clusters, self.cluster_sizes)

    def forward(self, feats: Union[Tensor, Tuple[Tensor]]) -> Tensor:
        """(B, D) features -> (B, K) logits ``q . c_k / tau``; no update."""
        queries = F.normalize(ClusterMemoryHead._last(feats), dim=1)
        return queries @ self.prototypes().t() / self.temperature

    def loss(self, feats: Union[Tensor, Tuple[Tensor]], data_samples: Sequence,
             **kwargs) -> Dict[str, Tensor]:
        """ClusterNCE loss of a batch, then the instance update.

        Args:
            feats (Tensor | tuple): (B, D) neck features (not normalised), or
                a tuple whose last item is.
            data_samples (Sequence): B data samples carrying ``sample_idx``.

        Returns:
            dict: ``loss`` (scalar, differentiable w.r.t. ``feats``) and
            ``acc`` (top-1 of the logits against the pseudo-labels; logged
            only).
        """
        if self.num_clusters == 0:
            raise RuntimeError(
                'InstanceMemoryHead is empty: call reset(centroids, '
                'sample_labels, features) (PseudoLabelHook does) before '
                'training')
        queries = F.normalize(ClusterMemoryHead._last(feats), dim=1)
        indices = self._sample_indices(data_samples)
        labels = self.sample_labels[indices].to(queries.device)

        # The prototypes are a new tensor: the in-place update of the
        # instance memory below leaves the matmul's saved operand alone, and
        # the logits and their gradient see the pre-update memory.
        logits = queries @ self.prototypes().t() / self.temperature
        losses = dict(loss=self.loss_module(logits, labels))
        with torch.no_grad():
            labelled = labels >= 0
            correct = (logits.argmax(dim=1) == labels) & labelled
            losses['acc'] = correct.sum() / labelled.sum().clamp(min=1)
            self._update_memory(
                queries.detach().to(self.instance_memory.dtype),
                indices.to(queries.device))
        return losses

    def _update_memory(self, queries: Tensor, indices: Tensor) -> None:
        """Every rank applies the same update with the whole global batch
        (padding rows carry index -1, which the update ignores)."""
        if dist.get_world_size() > 1:
            queries, indices = ClusterMemoryHead._gather_batch(
                queries, indices)
        instance_momentum_update(self.instance_memory, queries, indices,
                                 self.momentum)

    def _sample_indices(self, data_samples: Sequence) -> Tensor:
        """(B,) int64 dataset indices of the batch, on the labels' device."""
        indices = [sample_index(sample) for sample in data_samples]
        return torch.as_tensor(
            indices, dtype=torch.long, device=self.sample_labels.device)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        # Sizes differ from run to run and epoch to epoch: take the
        # checkpoint's before the shape check (as ClusterMemoryHead does).
        for name in ('instance_memory', 'sample_labels', 'cluster_sizes'):
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
        return (f'feat_dim={self.feat_dim}, '
                f'num_instances={self.instance_memory.size(0)}, '
                f'num_clusters={self.num_clusters}, '
                f'momentum={self.momentum}, temperature={self.temperature}')
