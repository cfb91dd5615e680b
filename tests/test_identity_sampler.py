import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import mmcc.datasets.samplers.identity_sampler as identity_sampler
from mmcc.datasets.samplers import CameraAwareIdentitySampler, IdentitySampler
from mmcc.registry import DATA_SAMPLERS

Z = 4  # images per identity in a batch
P = 3  # identities per batch


class FakeReIDData:
    """Index-returning data set with a camera per sample."""

    def __init__(self, cam_ids, with_getter=True):
        self._cam_ids = np.asarray(cam_ids)
        if with_getter:
            self.get_cam_ids = lambda: self._cam_ids.copy()

    def __len__(self):
        return len(self._cam_ids)

    def __getitem__(self, idx):
        return idx

    def get_data_info(self, idx):
        return dict(camid=int(self._cam_ids[idx]), sample_idx=idx)


def blocks(indices):
    return np.asarray(indices).reshape(-1, Z)


def make(cam_ids, labels=None, cls=CameraAwareIdentitySampler, **kwargs):
    kwargs = {**dict(num_instances=Z, batch_size=P * Z, seed=0), **kwargs}
    sampler = cls(FakeReIDData(cam_ids), **kwargs)
    if labels is not None:
        sampler.set_labels(labels)
    return sampler


def random_problem(num_samples=200, num_ids=20, num_cams=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, num_ids, num_samples)
    cam_ids = rng.integers(0, num_cams, num_samples)
    return labels, cam_ids


@pytest.mark.parametrize('cls', [CameraAwareIdentitySampler, IdentitySampler])
def test_batches_are_p_distinct_identities_of_z_images(cls):
    labels, cam_ids = random_problem()
    sampler = make(cam_ids, labels, cls=cls, iters_per_epoch=30)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 30 * P * Z
    for batch in np.asarray(indices).reshape(-1, P, Z):
        block_labels = labels[batch]
        assert (block_labels == block_labels[:, :1]).all()
        assert len(set(block_labels[:, 0])) == P
    assert (labels[indices] >= 0).all()  # outliers never yielded


def test_one_round_without_iters_per_epoch_visits_each_identity_once():
    labels = np.repeat(np.arange(7), 5)
    labels[::6] = -1
    sampler = make(np.zeros(len(labels)), labels)
    indices = list(sampler)
    assert len(indices) == len(sampler) == (7 // P) * P * Z
    firsts = labels[blocks(indices)[:, 0]]
    assert len(set(firsts)) == len(firsts)


def test_companions_come_from_other_cameras_when_enough():
    # One identity: 5 images in each of 3 cameras; 10 >= Z - 1 candidates
    # outside any anchor's camera.
    cam_ids = np.repeat([0, 1, 2], 5)
    sampler = make(
        cam_ids, np.zeros(15, int), iters_per_epoch=20, batch_size=Z)
    for block in blocks(list(sampler)):
        anchor_cam = cam_ids[block[0]]
        assert (cam_ids[block[1:]] != anchor_cam).all()
        assert len(set(block)) == Z  # without replacement


def test_too_few_other_camera_images_are_all_used_then_repeated():
    # Anchor in camera 0 (8 images) leaves 2 images from camera 1: both
    # must appear, no camera-0 companion.
    cam_ids = np.array([0] * 8 + [1] * 2)
    sampler = make(
        cam_ids, np.zeros(10, int), iters_per_epoch=40, batch_size=Z)
    seen_cam0_anchor = False
    for block in blocks(list(sampler)):
        if cam_ids[block[0]] == 0:
            seen_cam0_anchor = True
            assert set(block[1:]) == {8, 9}
    assert seen_cam0_anchor


def test_single_camera_falls_back_to_other_images_of_the_identity():
    cam_ids = np.zeros(6)
    labels = np.zeros(6, int)
    sampler = make(cam_ids, labels, iters_per_epoch=20, batch_size=Z)
    for block in blocks(list(sampler)):
        assert block[0] not in block[1:]  # anchor not repeated
        assert len(set(block)) == Z


def test_no_camera_variant_ignores_cameras():
    # With cameras ignored, same-camera companions must show up.
    cam_ids = np.repeat([0, 1], 6)
    sampler = make(
        cam_ids,
        np.zeros(12, int),
        cls=IdentitySampler,
        iters_per_epoch=20,
        batch_size=Z)
    assert sampler.cam_ids is None
    same = [(cam_ids[b[1:]] == cam_ids[b[0]]).any()
            for b in blocks(list(sampler))]
    assert any(same)


def test_singleton_identity_is_repeated():
    labels = np.array([0, 1, 1, 1, 1, -1])
    sampler = make(np.arange(6), labels, iters_per_epoch=10, batch_size=Z)
    found = False
    for block in blocks(list(sampler)):
        if labels[block[0]] == 0:
            found = True
            assert (block == 0).all()
    assert found


def test_set_labels_changes_what_is_yielded():
    labels, cam_ids = random_problem()
    sampler = make(cam_ids, labels, iters_per_epoch=10)
    first = set(sampler)
    new_labels = np.full_like(labels, -1)
    new_labels[:30] = np.arange(30) % 6
    sampler.set_labels(new_labels)
    second = list(sampler)
    assert set(second) <= set(range(30)) and set(second) != first
    for block in blocks(second):
        assert len(set(new_labels[block])) == 1


def test_iterating_before_set_labels_raises_but_len_works():
    sampler = make(np.zeros(40), iters_per_epoch=5)
    assert len(sampler) == 5 * P * Z
    with pytest.raises(RuntimeError, match='set_labels'):
        iter(sampler)
    assert len(make(np.zeros(40))) == (40 // P) * P * Z


def test_invalid_arguments_and_labels_are_rejected():
    with pytest.raises(ValueError, match='multiple'):
        make(np.zeros(8), batch_size=Z * P + 1)
    sampler = make(np.zeros(8))
    with pytest.raises(ValueError, match='shape'):
        sampler.set_labels(np.zeros(7, int))
    with pytest.raises(ValueError, match='outlier'):
        sampler.set_labels(np.full(8, -1))
    with pytest.raises(TypeError):
        sampler.set_labels(np.zeros(8))
    sampler.set_labels(torch.zeros(8, dtype=torch.long))
    sampler.check_batch_size(P * Z)
    with pytest.raises(ValueError, match='batch_size'):
        sampler.check_batch_size(P * Z * 2)


def test_same_seed_and_epoch_reproduce_other_epoch_differs():
    labels, cam_ids = random_problem()
    a = make(cam_ids, labels, iters_per_epoch=10)
    b = make(cam_ids, labels, iters_per_epoch=10)
    assert list(a) == list(b)
    assert list(a) == list(a)
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)


def test_ranks_shard_whole_batches_of_the_global_sequence():
    labels, cam_ids = random_problem()
    world, iters = 3, 7
    whole = make(cam_ids, labels, iters_per_epoch=iters * world)
    whole.set_epoch(2)
    global_batches = np.asarray(list(whole)).reshape(-1, P * Z)
    for rank in range(world):
        part = make(
            cam_ids,
            labels,
            iters_per_epoch=iters,
            rank=rank,
            world_size=world)
        part.set_epoch(2)
        indices = list(part)
        assert len(indices) == len(part) == iters * P * Z
        # rank r owns global batches r, r + world, ...: disjoint positions
        # whose union is the whole sequence.
        assert (np.reshape(indices,
                           (-1, P * Z)) == global_batches[rank::world]).all()


def test_ranks_from_get_dist_info_and_one_round_padding(monkeypatch):
    labels = np.repeat(np.arange(10), 3)  # 10 // P = 3 global batches
    monkeypatch.setattr(identity_sampler, 'get_dist_info', lambda: (1, 2))
    sampler = make(np.zeros(30), labels)
    assert (sampler.rank, sampler.world_size) == (1, 2)
    # 3 batches rounded up to 4 over 2 ranks.
    assert len(list(sampler)) == len(sampler) == 2 * P * Z


def test_camera_ids_read_from_data_info_without_getter():
    cam_ids = np.array([3, 1, 2, 0])
    sampler = CameraAwareIdentitySampler(
        FakeReIDData(cam_ids, with_getter=False),
        num_instances=2,
        batch_size=2,
        seed=0)
    assert sampler.cam_ids.tolist() == cam_ids.tolist()


def test_built_from_registry_like_the_runner():
    dataset = FakeReIDData(np.zeros(12))
    sampler = DATA_SAMPLERS.build(
        dict(
            type='CameraAwareIdentitySampler',
            num_instances=Z,
            batch_size=P * Z,
            iters_per_epoch=2),
        default_args=dict(dataset=dataset, seed=None))
    assert isinstance(sampler, CameraAwareIdentitySampler)
    assert isinstance(sampler.seed, int)
    assert DATA_SAMPLERS.get('IdentitySampler') is IdentitySampler


def test_inside_a_torch_dataloader():
    labels, cam_ids = random_problem()
    sampler = make(cam_ids, labels, iters_per_epoch=6)
    loader = DataLoader(
        FakeReIDData(cam_ids), batch_size=P * Z, sampler=sampler)
    batches = list(loader)
    assert len(loader) == len(batches) == 6
    for batch in batches:
        assert batch.shape == (P * Z, )
        block_labels = labels[batch.numpy()].reshape(P, Z)
        assert (block_labels == block_labels[:, :1]).all()
        assert len(set(block_labels[:, 0])) == P


def test_the_loader_batch_size_is_the_one_key():
    """mmengine builds the batch sampler with the loader's batch_size; the
    P x Z sampler takes P from it, and every batch is P whole blocks."""
    from mmengine.runner import Runner

    from mmcc.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    labels, cam_ids = random_problem()
    for batch_size in (2 * Z, 5 * Z):
        loader = Runner.build_dataloader(
            dict(
                batch_size=batch_size,
                num_workers=0,
                sampler=dict(
                    type='mmcc.CameraAwareIdentitySampler',
                    num_instances=Z,
                    iters_per_epoch=4),
                batch_sampler=dict(type='mmcc.IdentityBatchSampler'),
                dataset=FakeReIDData(cam_ids)),
            seed=0)
        sampler = loader.batch_sampler.sampler
        assert sampler.batch_size == batch_size
        assert sampler.identities_per_batch == batch_size // Z
        sampler.set_labels(labels)
        batches = list(loader)
        assert len(loader) == len(batches) == 4
        for batch in batches:
            # the data set got (index, augmentation seed) pairs, which
            # mmengine's collate transposes
            indices, seeds = map(np.asarray, batch)
            assert len(set(seeds.tolist())) == batch_size
            block_labels = labels[indices].reshape(-1, Z)
            assert block_labels.shape == (batch_size // Z, Z)
            assert (block_labels == block_labels[:, :1]).all()
            assert len(set(block_labels[:, 0])) == batch_size // Z


def test_batch_sampler_refuses_conflicting_or_foreign_samplers():
    from torch.utils.data import SequentialSampler

    from mmcc.datasets.samplers import IdentityBatchSampler
    unset = make(np.zeros(12), batch_size=None)
    with pytest.raises(RuntimeError, match='IdentityBatchSampler'):
        len(unset)
    with pytest.raises(ValueError, match='multiple'):
        IdentityBatchSampler(unset, batch_size=Z + 1)
    # a sampler given its own, different batch size: say which key to set
    with pytest.raises(ValueError, match='only train_dataloader.batch_size'):
        IdentityBatchSampler(make(np.zeros(12)), batch_size=2 * P * Z)
    IdentityBatchSampler(make(np.zeros(12)), batch_size=P * Z)  # agrees
    with pytest.raises(TypeError, match='identity sampler'):
        IdentityBatchSampler(SequentialSampler(range(4)), batch_size=2)


def test_batches_carry_augmentation_seeds_of_the_global_sequence():
    """Each index comes with the seed of its augmentation: the same for the
    same (seed, epoch, global batch) whatever the rank layout, another one
    in another epoch."""
    from mmcc.datasets.samplers import IdentityBatchSampler
    labels, cam_ids = random_problem()

    def epoch_batches(epoch, rank=0, world_size=1, iters=4):
        sampler = make(
            cam_ids,
            labels,
            batch_size=None,
            iters_per_epoch=iters,
            rank=rank,
            world_size=world_size)
        sampler.set_epoch(epoch)
        return list(IdentityBatchSampler(sampler, batch_size=P * Z))

    whole = epoch_batches(3)
    assert whole == epoch_batches(3)
    seeds = [seed for batch in whole for _, seed in batch]
    assert len(set(seeds)) == len(seeds)  # one seed per image
    assert all(0 <= seed < 2**32 for seed in seeds)
    other = epoch_batches(4)
    assert [s for b in other for _, s in b] != seeds
    # rank 1 of 2 gets global batches 1 and 3, with their seeds
    assert epoch_batches(3, rank=1, world_size=2, iters=2) == whole[1::2]
