"""P x Z identity samplers driven by pseudo-labels.

A training batch holds ``P`` pseudo-identities with ``Z = num_instances``
images each, laid out as ``P`` consecutive blocks of ``Z`` dataset indices.
The labels are not known when the Runner builds the sampler: the
pseudo-label hook hands them over with :meth:`IdentitySampler.set_labels`
before every epoch, in the main process (the sampler is iterated there, so
data-loader workers never see stale labels).

The two sampling rules are plain functions on arrays
(:func:`schedule_identities`, :func:`sample_identity_block`); the registered
classes add labels, cameras, epochs and ranks around them.
"""
import logging
import math
from typing import Iterator, List, Optional, Sequence, Sized, Tuple

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.logging import print_log
from torch.utils.data import BatchSampler, Sampler

from mmcc.registry import DATA_SAMPLERS

# Sub-streams of the per-epoch random state: one for the identity order, one
# per global batch for the images and one per global batch for the images'
# augmentation, so a batch does not depend on how many ranks share the epoch.
_SCHEDULE_STREAM, _BATCH_STREAM, _AUGMENT_STREAM = 0, 1, 2


def augmentation_seeds(seed: int, epoch: int, batch: int,
                       size: int) -> np.ndarray:
    """The seeds of one global batch's augmentations.

    Args:
        seed (int): The sampler's base seed.
        epoch (int): The epoch.
        batch (int): The global batch number in the epoch.
        size (int): Images in the batch.

    Returns:
        np.ndarray: (size,) int64 seeds in ``[0, 2**32)``.
    """
    rng = np.random.default_rng([seed % 2**63, epoch, _AUGMENT_STREAM, batch])
    return rng.integers(0, 2**32, size=size, dtype=np.int64)


def schedule_identities(num_identities: int,
                        num_batches: int,
                        identities_per_batch: int,
                        rng: np.random.Generator,
                        shuffle: bool = True) -> np.ndarray:
    """Decide which identities fill each batch.

    Identities are visited in *rounds*: a round is a random permutation of
    ``0 .. K-1`` (``K = num_identities``; ascending order when ``shuffle`` is
    False). With ``K >= P`` a round fills ``K // P`` batches of ``P``
    distinct identities and the ``K % P`` identities left at its end wait for
    a later round (as a loader with ``drop_last=True`` does at the end of a
    pass). With ``K < P`` rounds are chained without dropping, so a batch
    necessarily holds some identities more than once. Rounds are drawn until
    ``num_batches`` batches are full.

    Args:
        num_identities (int): ``K``, the number of identities, > 0.
        num_batches (int): ``B``, the number of batches to fill.
        identities_per_batch (int): ``P``.
        rng (np.random.Generator): Source of the permutations.
        shuffle (bool): Permute each round. Defaults to True.

    Returns:
        np.ndarray: (B, P) int64 identity ids in ``[0, K)``.
    """
    k, p = num_identities, identities_per_batch
    needed = num_batches * p
    kept_per_round = (k // p) * p if k >= p else k
    chunks, total = [], 0
    while total < needed:
        order = rng.permutation(k) if shuffle else np.arange(k)
        chunks.append(order[:kept_per_round])
        total += kept_per_round
    order = np.concatenate(chunks) if chunks else np.empty(0, np.int64)
    return order[:needed].astype(np.int64).reshape(num_batches, p)


def draw_companions(pool: np.ndarray, num: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Draw ``num`` items of ``pool``, repeating only when it is too small.

    With ``len(pool) >= num``: a uniform random subset, without replacement.
    Otherwise every item of ``pool`` once, plus ``num - len(pool)`` uniform
    draws with replacement; the result is returned in random order.

    Args:
        pool (np.ndarray): (M,) candidates, ``M >= 1``.
        num (int): How many to draw, >= 0.
        rng (np.random.Generator): Source of the draws.

    Returns:
        np.ndarray: (num,) items of ``pool``.
    """
    if len(pool) >= num:
        return rng.choice(pool, size=num, replace=False)
    extra = rng.choice(pool, size=num - len(pool), replace=True)
    return rng.permutation(np.concatenate([pool, extra]))


def sample_identity_block(members: np.ndarray, cam_ids: Optional[np.ndarray],
                          num_instances: int,
                          rng: np.random.Generator) -> np.ndarray:
    """Draw the ``Z = num_instances`` images of one identity for a batch.

    The rule ("random multiple gallery" sampling):

    1. the *anchor* is a uniformly random member;
    2. the *pool* of companions is the members seen by a camera other than
       the anchor's; if there is none (one camera only, or ``cam_ids`` is
       None), it is the members other than the anchor itself;
    3. the ``Z - 1`` companions are drawn from the pool with
       :func:`draw_companions` (without replacement when the pool is big
       enough, else each pool member once and the rest with replacement);
       an identity with a single image repeats it ``Z`` times.

    Args:
        members (np.ndarray): (M,) dataset indices of the identity, M >= 1.
        cam_ids (np.ndarray, optional): (M,) camera of each member, or None
            to ignore cameras.
        num_instances (int): ``Z``, >= 1.
        rng (np.random.Generator): Source of the draws.

    Returns:
        np.ndarray: (Z,) dataset indices, the anchor first.
    """
    anchor_pos = int(rng.integers(len(members)))
    anchor = members[anchor_pos]
    pool = members[:0]
    if cam_ids is not None:
        pool = members[cam_ids != cam_ids[anchor_pos]]
    if len(pool) == 0:
        pool = np.delete(members, anchor_pos)
    if len(pool) == 0:
        companions = np.full(num_instances - 1, anchor)
    else:
        companions = draw_companions(pool, num_instances - 1, rng)
    return np.concatenate([[anchor], companions]).astype(np.int64)


@DATA_SAMPLERS.register_module()
class IdentitySampler(Sampler):
    """P x Z batches of pseudo-identities, ignoring cameras.

    Every batch of ``batch_size = P * Z`` indices is ``P`` consecutive blocks
    of ``Z = num_instances`` images, one pseudo-identity per block. Which
    identities fill which batch follows :func:`schedule_identities` (``P``
    distinct identities per batch whenever there are at least ``P``); the
    images of a block follow :func:`sample_identity_block` with cameras
    ignored: a random anchor, then ``Z - 1`` other images of the identity,
    without replacement when it has at least ``Z`` images. Samples labelled
    -1 (outliers) are never yielded.

    **Labels.** The Runner builds the sampler before any pseudo-label
    exists; :meth:`set_labels` must be called (by the pseudo-label hook)
    before it is iterated, otherwise iterating raises ``RuntimeError``
    rather than silently training on meaningless groups.

    **Length.** With ``iters_per_epoch`` set, every rank yields exactly
    ``iters_per_epoch * batch_size`` indices per epoch, whatever the labels.
    With None, an epoch is one round: ``max(K // P, 1)`` global batches for
    ``K`` identities, split over ranks (rounded up, the extra batches taken
    from the next round) -- so ``len`` changes with the labels; before the
    first :meth:`set_labels` it reports the length as if every sample were
    its own identity. mmengine's loop reads ``len(dataloader)`` once to set
    ``max_iters``, so prefer a fixed ``iters_per_epoch``.

    **Batch size.** The configs give it once, as the loader's
    ``batch_size``, and batch with :class:`IdentityBatchSampler`
    (``batch_sampler=dict(type='IdentityBatchSampler')``), which hands it
    to :meth:`set_batch_size`; ``P = batch_size // num_instances``. Used
    with a plain loader instead, the sampler needs ``batch_size`` here and
    the loader's must equal it (:meth:`check_batch_size`), or batches
    straddle identity blocks.

    **Distributed.** All ranks derive the same identity schedule from
    ``seed + epoch`` (the seed is synchronised when not given); global batch
    ``b`` goes to rank ``b % world_size``, whole, and its images are drawn
    from a generator seeded by ``(seed, epoch, b)``. Hence the ranks'
    batches are disjoint slices of one global sequence, identical to what a
    single process with ``iters_per_epoch * world_size`` iterations yields.

    Args:
        dataset (Sized): The training set (only ``len`` is used here).
        num_instances (int): ``Z``, images per identity in a batch.
            Defaults to 16.
        batch_size (int, optional): ``P * Z`` per rank, a multiple of
            ``num_instances``; None to take it from
            :class:`IdentityBatchSampler`. Defaults to None.
        iters_per_epoch (int, optional): Batches per rank per epoch. None
            for one round of the identities. Defaults to None.
        shuffle (bool): Permute the identities each round; images are drawn
            at random either way. Defaults to True.
        seed (int, optional): Base seed, the same on every rank; None to
            draw and synchronise one. Defaults to None.
        rank (int, optional): Override of the rank from ``get_dist_info``.
        world_size (int, optional): Override of the world size.
    """

    use_cameras = False

    def __init__(self,
                 dataset: Sized,
                 num_instances: int = 16,
                 batch_size: Optional[int] = None,
                 iters_per_epoch: Optional[int] = None,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 rank: Optional[int] = None,
                 world_size: Optional[int] = None) -> None:
        if num_instances < 1:
            raise ValueError(f'num_instances must be >= 1, got '
                             f'{num_instances}')
        if iters_per_epoch is not None and iters_per_epoch < 1:
            raise ValueError(f'iters_per_epoch must be None or >= 1, got '
                             f'{iters_per_epoch}')
        dist_rank, dist_world_size = get_dist_info()
        self.rank = dist_rank if rank is None else rank
        self.world_size = (
            dist_world_size if world_size is None else world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f'rank {self.rank} is outside world size '
                             f'{self.world_size}')

        self.dataset = dataset
        self.num_samples = len(dataset)
        self.num_instances = num_instances
        self.batch_size: Optional[int] = None
        if batch_size is not None:
            self.set_batch_size(batch_size)
        self.iters_per_epoch = iters_per_epoch
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else seed
        self.epoch = 0
        self.cam_ids = self._read_cam_ids() if self.use_cameras else None

        self.labels: Optional[np.ndarray] = None
        self._members: List[np.ndarray] = []
        self._member_cams: List[Optional[np.ndarray]] = []

    def set_batch_size(self, batch_size: int) -> None:
        """Fix the per-rank batch ``P * Z``; ``P`` follows from it.

        Raises:
            ValueError: if ``batch_size`` is not a positive multiple of
                ``num_instances``, or differs from one already set.
        """
        if batch_size < self.num_instances or \
                batch_size % self.num_instances:
            raise ValueError(
                f'batch_size ({batch_size}) must be a positive multiple of '
                f'num_instances ({self.num_instances}): a batch is P '
                f'identities x Z images')
        if self.batch_size not in (None, batch_size):
            raise ValueError(
                f'{type(self).__name__} was given batch_size='
                f'{self.batch_size} but the loader batches '
                f'{batch_size}: set only train_dataloader.batch_size')
        self.batch_size = batch_size

    @property
    def identities_per_batch(self) -> int:
        """``P``, the pseudo-identities of one batch."""
        if self.batch_size is None:
            raise RuntimeError(
                f'{type(self).__name__} has no batch size: batch it with '
                f"batch_sampler=dict(type='IdentityBatchSampler') or pass "
                f'batch_size')
        return self.batch_size // self.num_instances

    def _read_cam_ids(self) -> np.ndarray:
        """(N,) camera of every sample, in dataset order."""
        if hasattr(self.dataset, 'get_cam_ids'):
            cam_ids = self.dataset.get_cam_ids()
        else:
            cam_ids = [
                self.dataset.get_data_info(i)['camid']
                for i in range(self.num_samples)
            ]
        cam_ids = np.asarray(cam_ids, dtype=np.int64)
        if cam_ids.shape != (self.num_samples, ):
            raise ValueError(f'expected {self.num_samples} camera ids, got '
                             f'shape {cam_ids.shape}')
        return cam_ids

    def set_labels(self, labels: Sequence[int]) -> None:
        """Use new pseudo-labels from the next iteration on.

        Args:
            labels (array-like): (N,) integer label of every sample in
                dataset order; -1 (any negative value) marks an outlier.
                Labels need not be contiguous.
        """
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        labels = np.asarray(labels)
        if labels.shape != (self.num_samples, ):
            raise ValueError(f'expected labels of shape ({self.num_samples},)'
                             f', got {labels.shape}')
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f'labels must be integers, got {labels.dtype}')
        labels = labels.astype(np.int64)
        inliers = np.flatnonzero(labels >= 0)
        if inliers.size == 0:
            raise ValueError('every sample is an outlier (-1): there is no '
                             'identity to sample')
        # Group the inliers by label; a stable sort keeps dataset order
        # inside each identity.
        by_label = inliers[np.argsort(labels[inliers], kind='stable')]
        starts = np.flatnonzero(np.diff(labels[by_label])) + 1
        self._members = np.split(by_label, starts)
        self._member_cams = [
            None if self.cam_ids is None else self.cam_ids[m]
            for m in self._members
        ]
        self.labels = labels
        if self.batch_size is not None and \
                len(self._members) < self.identities_per_batch:
            print_log(
                f'{type(self).__name__}: only {len(self._members)} '
                f'identities for {self.identities_per_batch} per batch; '
                f'batches will repeat identities.',
                logger='current',
                level=logging.WARNING)

    @property
    def num_identities(self) -> int:
        """Number of non-outlier identities in the current labels."""
        return len(self._members)

    def _num_global_batches(self) -> int:
        """Batches of the epoch over all ranks."""
        if self.iters_per_epoch is not None:
            return self.iters_per_epoch * self.world_size
        num_ids = (
            self.num_identities
            if self.labels is not None else self.num_samples)
        per_round = max(num_ids // self.identities_per_batch, 1)
        return math.ceil(per_round / self.world_size) * self.world_size

    def __len__(self) -> int:
        """Indices yielded by this rank in one epoch."""
        return (self._num_global_batches() // self.world_size *
                self.batch_size)

    def __iter__(self) -> Iterator[int]:
        if self.labels is None:
            raise RuntimeError(
                f'{type(self).__name__} has no labels: call '
                f'set_labels(labels) (the pseudo-label hook does, before '
                f'each epoch) before iterating it')
        seed = self.seed % 2**63
        num_batches = self._num_global_batches()
        schedule = schedule_identities(
            self.num_identities, num_batches, self.identities_per_batch,
            np.random.default_rng([seed, self.epoch, _SCHEDULE_STREAM]),
            self.shuffle)
        indices = []
        for batch in range(self.rank, num_batches, self.world_size):
            rng = np.random.default_rng(
                [seed, self.epoch, _BATCH_STREAM, batch])
            for identity in schedule[batch]:
                indices.append(
                    sample_identity_block(self._members[identity],
                                          self._member_cams[identity],
                                          self.num_instances, rng))
        return iter(np.concatenate(indices).tolist())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random sequence (seeded by seed and epoch)."""
        self.epoch = epoch

    def check_batch_size(self, batch_size: Optional[int]) -> None:
        """Raise ``ValueError`` unless a loader batch size matches ours."""
        if batch_size != self.batch_size:
            raise ValueError(
                f'the DataLoader batch_size ({batch_size}) must equal '
                f'{type(self).__name__}.batch_size ({self.batch_size}), or '
                f'batches straddle identity blocks')


@DATA_SAMPLERS.register_module()
class CameraAwareIdentitySampler(IdentitySampler):
    """P x Z batches of pseudo-identities, companions from other cameras.

    Like :class:`IdentitySampler` (see it for labels, length, loader and
    distributed behaviour), but the ``Z - 1`` companions of each block's
    random anchor are drawn among the identity's images from cameras other
    than the anchor's -- without replacement when there are at least
    ``Z - 1`` of them, else each of them once and the rest with replacement.
    Only when the identity has no image outside the anchor's camera are the
    companions drawn from its other images; a single-image identity repeats
    it ``Z`` times. See :func:`sample_identity_block` for the exact rule.

    Camera ids are read once, at construction, from
    ``dataset.get_cam_ids()`` when the dataset has it, else from
    ``dataset.get_data_info(i)['camid']`` for every ``i``.
    """

    use_cameras = True


@DATA_SAMPLERS.register_module()
class IdentityBatchSampler(BatchSampler):
    """Cut an identity sampler's stream into its P x Z batches.

    The one place the batch size is given: mmengine builds a
    ``batch_sampler`` with the loader's ``batch_size``, which this class
    hands to the identity sampler (``set_batch_size``), so
    ``train_dataloader.batch_size`` alone sets ``P = batch_size //
    num_instances`` per rank. Every batch is ``P`` whole identity blocks.

    **Augmentation seeds.** Each index comes with the seed of its
    augmentation, ``(index, seed)``, drawn from the sampler's seed, the
    epoch and the global batch (:func:`augmentation_seeds`);
    :class:`~mmcc.datasets.BaseReIDDataset` runs the pipeline under it. A
    sample's augmentation then depends on neither the data-loader worker
    nor its age, so a resumed run (new workers) draws exactly what the
    uninterrupted one (persistent workers) drew.

    Args:
        sampler (IdentitySampler): The P x Z index sampler.
        batch_size (int): Images per batch and rank, ``P * Z``.
        drop_last (bool): Unused: the identity sampler always yields whole
            batches. Defaults to False.
    """

    def __init__(self,
                 sampler: IdentitySampler,
                 batch_size: int,
                 drop_last: bool = False) -> None:
        if not hasattr(sampler, 'set_batch_size'):
            raise TypeError(
                f'IdentityBatchSampler batches an identity sampler '
                f'(IdentitySampler, CameraAwareIdentitySampler), got '
                f'{type(sampler).__name__}')
        sampler.set_batch_size(batch_size)
        super().__init__(sampler, batch_size, drop_last)

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        sampler = self.sampler
        for i, batch in enumerate(super().__iter__()):
            # this rank's i-th batch is global batch rank + i * world_size
            seeds = augmentation_seeds(sampler.seed, sampler.epoch,
                                       sampler.rank + i * sampler.world_size,
                                       len(batch))
            yield list(zip(batch, seeds.tolist()))
