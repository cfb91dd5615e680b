from typing import Optional, Union

import numpy as np
import torch
from mmengine.dist import broadcast_object_list, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmcc.clustering import (cluster_centroids, cluster_features,
                             pseudo_label_stats)
from mmcc.engine.feature_extraction import extract_features
from mmcc.registry import HOOKS
from mmcc.utils.timing import StageClock

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

    Degenerate rounds have defined outcomes: NaN/Inf embeddings stop the
    run (``FloatingPointError`` naming the epoch and iteration); every
    sample noise (0 clusters) stops it (``RuntimeError``); a single cluster
    is logged as a warning and the epoch trains on (its loss is 0; the next
    round may split the set); nearly identical embeddings are logged as a
    warning. An epoch that does not re-cluster (``interval`` > 1) hands the
    head's labels to the sampler if it has none, as after a resume.

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

    # Before IterTimerHook (NORMAL), which starts the epoch's clock in its
    # own before_train_epoch: clustering ran after it and was counted into
    # the first iteration's data_time (and the ETA). It is reported as its
    # own figure instead.
    priority = 'ABOVE_NORMAL'

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
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        if runner.epoch % self.interval != 0:
            # No clustering this epoch. A run resumed here has the labels
            # back in the head (a checkpointed buffer) but not yet in the
            # sampler.
            sampler = train_sampler(runner.train_dataloader)
            if sampler.labels is None and model.head.num_clusters:
                sampler.set_labels(model.head.sample_labels.cpu().numpy())
            return
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
        timings = {}
        with StageClock(timings)('embed'):
            features = extract_features(
                model, dataloader, progress=self.progress)
        if not bool(torch.isfinite(features).all()):
            bad = int((~torch.isfinite(features)).any(dim=1).sum())
            raise FloatingPointError(
                f'Epoch {runner.epoch} (iteration {runner.iter}): {bad} of '
                f'{len(features)} training embeddings are NaN/Inf; the model '
                'has diverged. Resume from an earlier checkpoint, e.g. with '
                'a lower learning rate.')
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
                cluster_features(features, self.cluster_cfg, timings),
                dtype=np.int64)
        broadcast_object_list(labels)
        labels = labels[0]
        total = sum(timings.values())
        runner.logger.info(
            f'Epoch {runner.epoch}: pseudo-labels took {total:.1f} s: ' +
            ', '.join(f'{stage} {seconds:.2f} s'
                      for stage, seconds in timings.items()) +
            f' ({len(features) / max(timings["embed"], 1e-9):.0f} '
            'images/s embedded)')
        num_clusters = int(labels.max()) + 1
        if num_clusters == 0:
            raise RuntimeError(
                f'PseudoLabelHook: epoch {runner.epoch}: clustering marked '
                f'every sample as noise; check the clustering config '
                f'{self.cluster_cfg}')
        if num_clusters == 1:
            # Documented choice: train on. ClusterNCE over one cluster is a
            # constant (a zero gradient), so this epoch changes only the
            # BatchNorm statistics and the weight decay; the next clustering
            # may split the set again. Stopping would end a long run that a
            # different eps could save.
            runner.logger.warning(
                f'Epoch {runner.epoch}: clustering found a single cluster '
                f'({int((labels >= 0).sum())} of {len(labels)} images): '
                'the loss is 0 and this epoch trains nothing. If it '
                'persists, lower eps (DBSCAN) or min_sim (Infomap).')

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
        scalars = {f'pseudo/{k}': v for k, v in stats.items()}
        scalars.update({f'pseudo/time_{k}_s': v for k, v in timings.items()})
        runner.visualizer.add_scalars(scalars, step=runner.epoch)
