from typing import Optional, Union

import numpy as np
from mmengine.dist import broadcast_object_list, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmcc.clustering import (cluster_centroids, cluster_features,
                             pseudo_label_stats)
from mmcc.engine.feature_extraction import extract_features
from mmcc.registry import HOOKS

# Unit embeddings of D dimensions spread ~1/sqrt(D) per dimension; far
# below this they differ by rounding only.
_MIN_EMBEDDING_SPREAD = 1e-6


def train_sampler(loader):
    """The sampler that takes pseudo-labels: the one inside the loader's
    batch sampler (``IdentityBatchSampler``, or torch's own when the loader
    was given ``batch_size`` and ``sampler``)."""
    inner = getattr(loader.batch_sampler, 'sampler', None)
    return inner if hasattr(inner, 'set_labels') else loader.sampler


@HOOKS.register_module()
class PseudoLabelHook(Hook):
    """Re-cluster the training set before training epochs.

    Before every ``interval``-th training epoch: embed the whole training set
    with the test pipeline (eval mode), cluster the embeddings
    (:func:`mmcc.clustering.cluster_features`: k-reciprocal Jaccard + DBSCAN,
    Infomap, HDBSCAN...), re-initialise the model head's cluster memory with
    the clusters' centroids, and hand the labels to the head (which looks
    them up by ``sample_idx``) and to the train sampler (``set_labels``).
    Outliers (-1) are never sampled. Labels stay in the main process, so
    persistent data-loader workers never see stale labels.

    Args:
        cluster (dict): Clustering config, e.g.
            ``dict(type='dbscan', eps=0.6, min_samples=4, k1=30, k2=6)``.
        dataloader (dict | str): Data loader over the training set with the
            test pipeline and a non-shuffling sampler, or the name of a
            top-level config field holding one. Defaults to
            ``'cluster_dataloader'``.
        interval (int): Re-cluster every ``interval`` epochs. Defaults to 1.
        progress (bool): Show a progress bar while embedding.
    """

    priority = 'NORMAL'

    def __init__(self,
                 cluster: dict,
                 dataloader: Union[dict, str] = 'cluster_dataloader',
                 interval: int = 1,
                 progress: bool = True):
        self.cluster_cfg = dict(cluster)
        self.dataloader_cfg = dataloader
        self.interval = interval
        self.progress = progress
        self._dataloader = None
        self.last_stats: Optional[dict] = None

    def _build_dataloader(self, runner):
        if self._dataloader is None:
            cfg = self.dataloader_cfg
            if isinstance(cfg, str):
                if cfg not in runner.cfg:
                    raise KeyError(f'PseudoLabelHook: the config has no '
                                   f'top-level field "{cfg}"')
                cfg = runner.cfg[cfg]
            self._dataloader = runner.build_dataloader(cfg, seed=runner.seed)
        return self._dataloader

    def before_train(self, runner) -> None:
        # The batches must be whole P x Z blocks: IdentityBatchSampler makes
        # them so; a plain loader's batch size must match the sampler's.
        loader = runner.train_dataloader
        sampler = train_sampler(loader)
        if hasattr(sampler, 'check_batch_size'):
            sampler.check_batch_size(loader.batch_sampler.batch_size)

    def before_train_epoch(self, runner) -> None:
        if runner.epoch % self.interval != 0:
            return
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        dataloader = self._build_dataloader(runner)
        train_set = runner.train_dataloader.dataset
        if len(dataloader.dataset) != len(train_set):
            raise ValueError(
                'PseudoLabelHook: the clustering data loader has '
                f'{len(dataloader.dataset)} samples but the training set has '
                f'{len(train_set)}; both must list the same images')

        runner.logger.info(
            f'Epoch {runner.epoch}: embedding {len(train_set)} training '
            'images for clustering')
        features = extract_features(model, dataloader, progress=self.progress)
        # Embeddings that (nearly) coincide cluster into noise. A backbone
        # with random weights does this in eval mode when its init is too
        # small for its BatchNorm statistics (mmpretrain's EfficientNet and
        # MobileNetV2: depthwise convolutions under Kaiming fan_out).
        spread = float(features.std(dim=0).mean()) if len(features) > 1 \
            else 1.0
        if spread < _MIN_EMBEDDING_SPREAD:
            runner.logger.warning(
                f'Epoch {runner.epoch}: the {len(features)} training '
                f'embeddings are nearly identical (mean per-dimension std '
                f'{spread:.2e}), so clustering them is meaningless. Is the '
                'backbone randomly initialised? Load pretrained weights.')
        labels = [None]
        if is_main_process():
            labels[0] = np.asarray(
                cluster_features(features, self.cluster_cfg), dtype=np.int64)
        broadcast_object_list(labels)
        labels = labels[0]
        num_clusters = int(labels.max()) + 1
        if num_clusters == 0:
            raise RuntimeError(
                'PseudoLabelHook: clustering marked every sample as noise; '
                f'check the clustering config {self.cluster_cfg}')

        centroids = cluster_centroids(features, labels, num_clusters)
        model.head.reset(centroids, labels)
        train_sampler(runner.train_dataloader).set_labels(labels)

        true_ids = train_set.get_gt_labels() if hasattr(
            train_set, 'get_gt_labels') else None
        stats = pseudo_label_stats(labels, true_ids)
        self.last_stats = stats
        runner.logger.info('Pseudo-labels: ' + ', '.join(
            f'{k}={v:.4f}' if isinstance(v, float) else f'{k}={v}'
            for k, v in stats.items()))
        runner.visualizer.add_scalars(
            {
                f'pseudo/{k}': v
                for k, v in stats.items()
            }, step=runner.epoch)
