import builtins
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine.dist import get_comm_device, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmcc.clustering import (cluster_centroids, cluster_features,
                             pseudo_label_stats)
from mmcc.engine.feature_extraction import broadcast_rows, extract_features
from mmcc.registry import HOOKS
from mmcc.utils.timing import StageClock

# Unit embeddings of D dimensions spread ~1/sqrt(D) per dimension; far
# below this they differ by rounding only.
_MIN_EMBEDDING_SPREAD = 1e-6
# Rows checked for NaN/Inf at a time.
_CHECK_ROWS = 8192


def _share_failure(failure: Optional[Exception]) -> None:
    """Stop every rank with the exception rank 0 raised, if it raised one.

    Rank 0 broadcasts a status first (the length of the failure's
    ``"ClassName\\nmessage"``, 0 for none), then the text. Rank 0 re-raises
    its own exception; the others raise the built-in exception of that
    name with the same message (a class that is not a built-in becomes a
    ``RuntimeError`` naming it). No rank is left waiting in a collective.
    """
    if get_world_size() == 1:
        if failure is not None:
            raise failure
        return
    device = get_comm_device()
    text = b'' if failure is None else \
        f'{type(failure).__name__}\n{failure}'.encode()
    size = torch.tensor([len(text)], dtype=torch.int64, device=device)
    torch_dist.broadcast(size, 0)
    if int(size.item()) == 0:
        return
    if failure is not None:
        payload = torch.frombuffer(bytearray(text), dtype=torch.uint8)
        torch_dist.broadcast(payload.to(device), 0)
        raise failure
    payload = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    torch_dist.broadcast(payload, 0)
    name, _, message = bytes(payload.cpu().tolist()).decode().partition('\n')
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            error = cls(message)
        except TypeError:  # needs other arguments
            error = None
    else:
        error = None
    if error is None:
        error = RuntimeError(f'{name} on rank 0: {message}')
    raise error


def _broadcast_result(
    result: Optional[Tuple[torch.Tensor, torch.Tensor]]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rank 0's (labels, centroids) on every rank: (N,) int64 and (K, D)
    float32 CPU tensors, sent as tensors (in bounded chunks), not pickled.
    Other ranks pass None."""
    if get_world_size() == 1:
        return result
    device = get_comm_device()
    if result is not None:
        labels, centroids = result
        shape = torch.tensor([len(labels), *centroids.shape], device=device)
    else:
        shape = torch.empty(3, dtype=torch.int64, device=device)
    torch_dist.broadcast(shape, 0)
    num_samples, num_clusters, dim = shape.tolist()
    if result is None:
        labels = torch.empty(num_samples, dtype=torch.int64)
        centroids = torch.empty(num_clusters, dim, dtype=torch.float32)
    broadcast_rows(labels, src=0)
    broadcast_rows(centroids, src=0)
    return labels, centroids


def train_sampler(loader):
    """The sampler that takes pseudo-labels: the one inside the loader's
    batch sampler (``IdentityBatchSampler``, or torch's own when the loader
    was given ``batch_size`` and ``sampler``)."""
    inner = getattr(loader.batch_sampler, 'sampler', None)
    return inner if hasattr(inner, 'set_labels') else loader.sampler


class ReplayedBatches:
    """A data loader's batches, read once and then replayed from memory.

    Stands in for the loader where it is only iterated and measured
    (``dataset``, ``len``). Batches are cached only when a pass completes,
    so an interrupted first pass is read again next time.
    """

    def __init__(self, loader):
        self.loader = loader
        self.dataset = loader.dataset
        self._batches = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if self._batches is not None:
            yield from self._batches
            return
        batches = []
        for batch in self.loader:
            batches.append(batch)
            yield batch
        self._batches = batches


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

    Under distributed data parallel only rank 0 holds the (N, D)
    embeddings (:func:`extract_features` with ``gather_to='main'``); it
    checks, clusters and averages them, then broadcasts a status, the
    labels and the centroids as tensors. An error decided there (NaN
    embeddings, all noise, a failing clustering) is raised on every rank
    with the same class and message. Every rank then calls
    ``model.head.reset(centroids, labels)``, or, for a head with the
    attribute ``needs_features = True`` (one that keeps per-sample
    features), ``model.head.reset(centroids, labels, features=features)``
    with the (N, D) float32 embeddings, which rank 0 then broadcasts in
    chunks.

    Args:
        cluster (dict): Clustering config, e.g.
            ``dict(type='dbscan', eps=0.6, min_samples=4, k1=30, k2=6)``.
        dataloader (dict | str): Data loader over the training set with the
            test pipeline and a non-shuffling sampler, or the name of a
            top-level config field holding one. Defaults to
            ``'cluster_dataloader'``.
        interval (int): Re-cluster every ``interval`` epochs. Defaults to 1.
        progress (bool): Show a progress bar while embedding.
        cache_batches (bool): Keep the embedding pass's batches in memory
            after its first epoch and replay them: its test pipeline is
            deterministic, so every epoch would decode the same images into
            the same tensors. Costs the decoded images' memory (24.6 KB an
            image at 128x64, 98 KB at 256x128: 1.3 GB for Market-1501's
            12,936), so it suits small training sets on CPU. Defaults to
            False.
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
                 progress: bool = True,
                 cache_batches: bool = False):
        self.cluster_cfg = dict(cluster)
        self.dataloader_cfg = dataloader
        self.interval = interval
        self.progress = progress
        self.cache_batches = cache_batches
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
            cfg = dict(cfg)
            if cfg.get('num_workers', 0) > 0 and not self.cache_batches:
                # iterated every epoch: keep the workers rather than start
                # them again (1.5 s an epoch in the demo); they only read
                # images, so nothing they hold goes stale. Replayed batches
                # read the loader once: its workers may then exit.
                cfg.setdefault('persistent_workers', True)
            self._dataloader = runner.build_dataloader(cfg, seed=runner.seed)
            if self.cache_batches:
                self._dataloader = ReplayedBatches(self._dataloader)
        return self._dataloader

    def before_train(self, runner) -> None:
        # The batches must be whole P x Z blocks: IdentityBatchSampler makes
        # them so; a plain loader's batch size must match the sampler's.
        loader = runner.train_dataloader
        sampler = train_sampler(loader)
        if hasattr(sampler, 'check_batch_size'):
            sampler.check_batch_size(loader.batch_sampler.batch_size)

    def _cluster(self, runner, features: torch.Tensor,
                 timings: dict) -> Tuple[torch.Tensor, torch.Tensor]:
        """On rank 0: check the embeddings, cluster them and average every
        cluster. Returns (N,) int64 labels and (K, D) float32 centroids;
        raises on NaN/Inf embeddings and on a clustering without a
        cluster."""
        # by row blocks: a mask of the whole matrix would be N x D bytes
        bad = sum(
            int((~torch.isfinite(block)).any(dim=1).sum())
            for block in features.split(_CHECK_ROWS))
        if bad:
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
        labels = torch.from_numpy(
            np.ascontiguousarray(
                cluster_features(features, self.cluster_cfg, timings),
                dtype=np.int64))
        num_clusters = int(labels.max()) + 1 if len(labels) else 0
        if num_clusters <= 0:
            raise RuntimeError(
                f'PseudoLabelHook: epoch {runner.epoch}: clustering marked '
                f'every sample as noise; check the clustering config '
                f'{self.cluster_cfg}')
        centroids = cluster_centroids(features, labels, num_clusters)
        return labels, centroids.float().contiguous()

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
            # rank 0 gets the (N, D) matrix, the other ranks None
            features = extract_features(
                model, dataloader, progress=self.progress, gather_to='main')
        result = failure = None
        if is_main_process():
            try:
                result = self._cluster(runner, features, timings)
            except Exception as error:  # re-raised on every rank below
                failure = error
        _share_failure(failure)
        labels, centroids = _broadcast_result(result)
        total = sum(timings.values())
        num_samples = len(labels)
        runner.logger.info(
            f'Epoch {runner.epoch}: pseudo-labels took {total:.1f} s: ' +
            ', '.join(f'{stage} {seconds:.2f} s'
                      for stage, seconds in timings.items()) +
            f' ({num_samples / max(timings["embed"], 1e-9):.0f} '
            'images/s embedded)')
        num_clusters = len(centroids)
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

        if getattr(model.head, 'needs_features', False) is True:
            if features is None:
                features = torch.empty(num_samples, centroids.size(1))
            broadcast_rows(features, src=0)
            model.head.reset(centroids, labels, features=features)
        else:
            model.head.reset(centroids, labels)
        del features
        labels = labels.numpy()
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
