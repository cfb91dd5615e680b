"""ClusterMemoryHead and ClusterNCELoss."""
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import load_state_dict
from mmpretrain.structures import DataSample

import mmcc.models.heads  # noqa: F401  (registers ClusterMemoryHead)
import mmcc.models.losses  # noqa: F401  (registers ClusterNCELoss)
from mmcc.models.functional import momentum_update
from mmcc.models.heads import cluster_memory_head
from mmcc.registry import MODELS

DIM, TAU = 8, 0.05


@pytest.fixture(autouse=True)
def mmcc_scope():
    # Other tests' runners may leave another default scope behind; the
    # bare type names below are mmcc's.
    with DefaultScope.overwrite_default_scope('mmcc'):
        yield


def build_head(**kwargs):
    return MODELS.build(dict(type='ClusterMemoryHead', feat_dim=DIM, **kwargs))


def ready_head(num_clusters=6, num_samples=30, seed=0, **kwargs):
    g = torch.Generator().manual_seed(seed)
    head = build_head(**kwargs)
    centroids = torch.randn(num_clusters, DIM, generator=g) * 3
    labels = torch.randint(-1, num_clusters, (num_samples, ), generator=g)
    head.reset(centroids, labels)
    return head, centroids, labels


def samples(indices, gt_labels=None):
    gt_labels = gt_labels if gt_labels is not None else [0] * len(indices)
    return [
        DataSample(metainfo=dict(sample_idx=int(i))).set_gt_label(int(gt))
        for i, gt in zip(indices, gt_labels)
    ]


def snapshot(head):
    # state_dict() aliases the buffers, which the update changes in place.
    return {k: v.clone() for k, v in head.state_dict().items()}


def test_buffers_start_empty_and_loss_refuses_to_run():
    head = build_head()
    assert head.memory.shape == (0, DIM) and head.sample_labels.numel() == 0
    assert list(head.parameters()) == []
    with pytest.raises(RuntimeError, match='reset'):
        head.loss(torch.randn(2, DIM), samples([0, 1]))


def test_reset_resizes_and_normalises():
    head, centroids, labels = ready_head(num_clusters=6, num_samples=30)
    assert head.memory.shape == (6, DIM) and head.num_clusters == 6
    assert torch.allclose(head.memory, F.normalize(centroids, dim=1))
    assert head.sample_labels.dtype == torch.int64
    assert torch.equal(head.sample_labels, labels)
    # Next epoch: other sizes, numpy inputs.
    head.reset(np.ones((3, DIM), np.float32), np.array([2, -1, 0, 1]))
    assert head.memory.shape == (3, DIM)
    assert torch.allclose(head.memory.norm(dim=1), torch.ones(3))
    assert head.memory.dtype == torch.float32
    assert head.sample_labels.tolist() == [2, -1, 0, 1]
    assert 'memory' in dict(head.named_buffers())
    with pytest.raises(ValueError):
        head.reset(torch.ones(3, DIM + 1), [0])
    with pytest.raises(ValueError):
        head.reset(torch.ones(3, DIM), [0, 3])


def test_loss_matches_manual_cross_entropy():
    head, centroids, sample_labels = ready_head(
        loss=dict(type='ClusterNCELoss', loss_weight=0.5))
    idx = torch.tensor([3, 7, 0, 12, 29])
    idx = idx[sample_labels[idx] >= 0]
    feats = torch.randn(len(idx), DIM)
    memory_before = head.memory.clone()
    losses = head.loss(feats, samples(idx))
    logits = F.normalize(feats, dim=1) @ F.normalize(centroids, dim=1).t()
    expected = F.cross_entropy(logits / TAU, sample_labels[idx])
    assert torch.allclose(losses['loss'], 0.5 * expected, atol=1e-5)
    accuracy = (logits.argmax(1) == sample_labels[idx]).float().mean()
    assert torch.allclose(losses['acc'], accuracy)
    # forward() gives the logits without updating.
    head.memory.copy_(memory_before)
    assert torch.allclose(head(feats), logits / TAU, atol=1e-5)
    assert torch.equal(head.memory, memory_before)


def test_labels_come_from_sample_labels_never_gt_label():
    head, _, sample_labels = ready_head(seed=1)
    idx = [i for i in range(30) if sample_labels[i] >= 0][:8]
    feats = torch.randn(len(idx), DIM)
    state = snapshot(head)
    wrong_gt = torch.randint(0, 6, (len(idx), )).tolist()
    loss_gt_a = head.loss(feats, samples(idx, wrong_gt))['loss']
    head.load_state_dict(state)
    loss_gt_b = head.loss(feats, samples(idx, [5] * len(idx)))['loss']
    assert torch.equal(loss_gt_a, loss_gt_b)
    head.load_state_dict(state)
    relabelled = sample_labels.clone()
    relabelled[idx] = (relabelled[idx] + 1) % 6
    head.reset(state['memory'], relabelled)
    loss_moved = head.loss(feats, samples(idx, wrong_gt))['loss']
    assert not torch.allclose(loss_gt_a, loss_moved)
    # Plain dicts carrying sample_idx work too.
    head.load_state_dict(state)
    assert torch.equal(
        head.loss(feats, [dict(sample_idx=i) for i in idx])['loss'], loss_gt_a)
    with pytest.raises(KeyError, match='sample_idx'):
        head.loss(feats, [DataSample() for _ in idx])


@pytest.mark.parametrize('mode', ['mean', 'hard'])
def test_loss_applies_the_momentum_update(mode):
    head, _, sample_labels = ready_head(momentum=0.3, update_mode=mode)
    idx = torch.arange(30)
    feats = torch.randn(30, DIM)
    expected = momentum_update(head.memory.clone(), F.normalize(feats, dim=1),
                               sample_labels[idx], 0.3, mode)
    head.loss(feats, samples(idx))
    assert torch.allclose(head.memory, expected, atol=1e-6)


def test_outliers_in_a_batch_are_ignored():
    head, _, sample_labels = ready_head(seed=2)
    outlier = int((sample_labels == -1).nonzero()[0])
    inliers = (sample_labels >= 0).nonzero().flatten()[:4].tolist()
    feats = torch.randn(5, DIM)
    state = snapshot(head)
    with_outlier = head.loss(feats, samples(inliers + [outlier]))
    after_with = head.memory.clone()
    head.load_state_dict(state)
    without = head.loss(feats[:4], samples(inliers))
    assert torch.allclose(with_outlier['loss'], without['loss'])
    assert torch.allclose(with_outlier['acc'], without['acc'])
    assert torch.equal(after_with, head.memory)


def test_gradient_reaches_feats_not_memory():
    head, _, sample_labels = ready_head()
    idx = (sample_labels >= 0).nonzero().flatten()[:6]
    feats = torch.randn(len(idx), DIM, requires_grad=True)
    memory_before = head.memory.clone()
    loss = head.loss(feats, samples(idx))['loss']
    assert not torch.equal(head.memory, memory_before)  # updated in place
    loss.backward()  # the in-place update did not invalidate the graph
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert not head.memory.requires_grad and head.memory.grad is None
    assert 'memory' not in dict(head.named_parameters())
    # The gradient is the one of the pre-update memory.
    reference = feats.detach().clone().requires_grad_()
    logits = F.normalize(reference, dim=1) @ memory_before.t() / TAU
    F.cross_entropy(logits, sample_labels[idx]).backward()
    assert torch.allclose(feats.grad, reference.grad, atol=1e-5)


def test_save_load_round_trip_with_other_sizes():
    head, _, _ = ready_head(num_clusters=7, num_samples=40)
    buffer = io.BytesIO()
    torch.save(head.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    for fresh in (build_head(), ready_head(num_clusters=3, num_samples=9)[0]):
        fresh.load_state_dict(state)
        assert torch.equal(fresh.memory, head.memory)
        assert torch.equal(fresh.sample_labels, head.sample_labels)
    # mmengine's loader (used by load_checkpoint / resume) too.
    fresh = build_head()
    load_state_dict(fresh, state, strict=True)
    assert torch.equal(fresh.memory, head.memory)
    # A different feature dimension is still an error.
    other = MODELS.build(dict(type='ClusterMemoryHead', feat_dim=DIM + 1))
    with pytest.raises(RuntimeError, match='size mismatch'):
        other.load_state_dict(state)


class FakeWorld:
    """Stands in for mmengine.dist with a 2-rank world; we are rank 0."""

    def __init__(self, other_queries, other_labels):
        self.other = dict(queries=other_queries, labels=other_labels)

    def get_world_size(self):
        return 2

    def all_reduce(self, data, op='sum'):
        assert op == 'max'
        data.clamp_(min=len(self.other['labels']))

    def all_gather(self, data):
        theirs = self.other['labels' if data.dtype ==
                            torch.long else 'queries']
        pad = len(data) - len(theirs)
        if data.dtype == torch.long:
            theirs = F.pad(theirs, (0, pad), value=-1)
        else:
            theirs = F.pad(theirs, (0, 0, 0, pad))
        return [data, theirs]


@pytest.mark.parametrize('mode', ['mean', 'hard'])
@pytest.mark.parametrize('other_size', [5, 7])
def test_distributed_update_uses_the_gathered_batch(monkeypatch, mode,
                                                    other_size):
    head, _, sample_labels = ready_head(update_mode=mode)
    g = torch.Generator().manual_seed(9)
    feats = torch.randn(5, DIM, generator=g)
    idx = torch.arange(5)
    other_q = F.normalize(torch.randn(other_size, DIM, generator=g), dim=1)
    other_y = torch.randint(0, 6, (other_size, ), generator=g)
    monkeypatch.setattr(cluster_memory_head, 'dist',
                        FakeWorld(other_q, other_y))
    all_q = torch.cat([F.normalize(feats, dim=1), other_q])
    all_y = torch.cat([sample_labels[idx], other_y])
    expected = momentum_update(head.memory.clone(), all_q, all_y, 0.1, mode)
    head.loss(feats, samples(idx))
    assert torch.allclose(head.memory, expected, atol=1e-6)


def test_cluster_nce_loss_ignores_outliers_and_is_zero_without_labels():
    loss = MODELS.build(dict(type='ClusterNCELoss', loss_weight=2.0))
    logits = torch.randn(4, 5)
    labels = torch.tensor([1, -1, 4, 0])
    keep = labels >= 0
    expected = 2.0 * F.cross_entropy(logits[keep], labels[keep])
    assert torch.allclose(loss(logits, labels), expected)
    assert loss(logits, torch.full((4, ), -1)).item() == 0.0
