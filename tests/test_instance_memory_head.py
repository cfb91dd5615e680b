"""InstanceMemoryHead and its tensor functions: update and prototypes."""
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import load_state_dict

import mmcc.models.heads  # noqa: F401  (registers the heads)
import mmcc.models.losses  # noqa: F401  (registers ClusterNCELoss)
from mmcc.models.functional import cluster_prototypes, instance_momentum_update
from mmcc.models.heads import cluster_memory_head, instance_memory_head
from mmcc.registry import MODELS

DIM, TAU = 8, 0.05


@pytest.fixture(autouse=True)
def mmcc_scope():
    with DefaultScope.overwrite_default_scope('mmcc'):
        yield


def build_head(**kwargs):
    return MODELS.build(
        dict(type='InstanceMemoryHead', feat_dim=DIM, **kwargs))


def ready_head(num_clusters=5, num_samples=30, seed=0, **kwargs):
    """A head reset with random features and labels (every cluster used)."""
    g = torch.Generator().manual_seed(seed)
    head = build_head(**kwargs)
    features = torch.randn(num_samples, DIM, generator=g) * 2
    labels = torch.randint(-1, num_clusters, (num_samples, ), generator=g)
    labels[:num_clusters] = torch.arange(num_clusters)
    head.reset(torch.zeros(num_clusters, DIM), labels, features=features)
    return head, features, labels


def samples(indices):
    return [dict(sample_idx=int(i)) for i in indices]


def naive_update(memory, queries, indices, m):
    memory = memory.clone()
    for q, i in zip(queries, indices.tolist()):
        if i < 0:
            continue
        memory[i] = m * memory[i] + (1 - m) * q
        memory[i] = memory[i] / memory[i].norm()
    return memory


def naive_prototypes(memory, labels, num_clusters):
    rows = []
    for k in range(num_clusters):
        members = memory[labels == k]
        rows.append(members.mean(0) if len(members) else torch.zeros(DIM))
    return torch.stack(rows)


# --------------------------------------------------------------------------
# The tensor functions
# --------------------------------------------------------------------------
@pytest.mark.parametrize('m', [0.0, 0.2, 0.9, 1.0])
def test_instance_update_matches_a_naive_loop(m):
    g = torch.Generator().manual_seed(1)
    memory = F.normalize(torch.randn(10, DIM, generator=g), dim=1)
    queries = F.normalize(torch.randn(12, DIM, generator=g), dim=1)
    # duplicates (3 three times, 7 twice) and padding (-1)
    indices = torch.tensor([3, 0, 7, 3, -1, 9, 7, 3, 1, 2, -1, 5])
    expected = naive_update(memory, queries, indices, m)
    out = instance_momentum_update(memory, queries, indices, m)
    assert out is memory
    torch.testing.assert_close(memory, expected, atol=1e-6, rtol=1e-5)
    if m == 0.0:  # no momentum: the newest query replaces the entry
        torch.testing.assert_close(memory[3], queries[7])
    untouched = [4, 6, 8]
    assert torch.equal(memory[untouched], expected[untouched])
    with pytest.raises(ValueError, match='below N'):
        instance_momentum_update(memory, queries[:1], torch.tensor([10]), m)


def test_prototypes_are_the_plain_mean_of_members():
    g = torch.Generator().manual_seed(2)
    memory = F.normalize(torch.randn(20, DIM, generator=g), dim=1)
    labels = torch.randint(-1, 4, (20, ), generator=g)
    labels[labels == 2] = 1  # cluster 2 left without members
    expected = naive_prototypes(memory, labels, 5)
    torch.testing.assert_close(cluster_prototypes(memory, labels, 5), expected)
    sizes = torch.bincount(labels[labels >= 0], minlength=5)
    torch.testing.assert_close(
        cluster_prototypes(memory, labels, 5, sizes), expected)
    assert torch.equal(
        cluster_prototypes(memory, labels, 5)[2], torch.zeros(DIM))
    # not renormalised: a cluster of several directions is shorter than 1
    assert (expected[sizes > 1].norm(dim=1) < 1).all()


# --------------------------------------------------------------------------
# The head
# --------------------------------------------------------------------------
def test_reset_needs_features_and_checks_shapes():
    head = build_head()
    assert head.needs_features is True
    # every buffer is kept equal across ranks by the update itself
    assert set(
        head.unsynced_buffers) == {name
                                   for name, _ in head.named_buffers()}
    assert head.num_clusters == 0 and list(head.parameters()) == []
    with pytest.raises(RuntimeError, match='reset'):
        head.loss(torch.randn(2, DIM), samples([0, 1]))
    with pytest.raises(ValueError, match='needs the'):
        head.reset(torch.zeros(2, DIM), [0, 1])
    with pytest.raises(ValueError, match='features'):
        head.reset(torch.zeros(2, DIM), [0, 1], features=torch.ones(3, DIM))
    with pytest.raises(ValueError, match='sample_labels'):
        head.reset(torch.zeros(2, DIM), [0, 2], features=torch.ones(2, DIM))
    head, features, labels = ready_head()
    assert head.num_clusters == 5
    assert head.instance_memory.shape == (30, DIM)
    torch.testing.assert_close(head.instance_memory,
                               F.normalize(features, dim=1))
    assert torch.equal(head.sample_labels, labels)
    assert torch.equal(head.cluster_sizes,
                       torch.bincount(labels[labels >= 0], minlength=5))
    # numpy inputs and other sizes next epoch
    head.reset(
        np.zeros((2, DIM), np.float32),
        np.array([1, -1, 0]),
        features=np.ones((3, DIM), np.float32))
    assert head.instance_memory.shape == (3, DIM) and head.num_clusters == 2


def test_loss_is_cluster_nce_on_prototypes_then_updates_the_entries():
    head, _, labels = ready_head(momentum=0.3, seed=3)
    labelled = [i for i in range(30) if labels[i] >= 0]
    idx = torch.tensor(labelled[:6] + labelled[:1])  # one image twice
    feats = torch.randn(len(idx), DIM, requires_grad=True)
    memory = head.instance_memory.clone()
    prototypes = naive_prototypes(memory, labels, 5)
    losses = head.loss(feats, samples(idx))
    queries = F.normalize(feats.detach(), dim=1)
    logits = queries @ prototypes.t() / TAU
    torch.testing.assert_close(losses['loss'],
                               F.cross_entropy(logits, labels[idx]))
    accuracy = (logits.argmax(1) == labels[idx]).float().mean()
    torch.testing.assert_close(losses['acc'], accuracy)
    # the batch's own entries moved, in batch order, nothing else
    torch.testing.assert_close(head.instance_memory,
                               naive_update(memory, queries, idx, 0.3))
    # the gradient is the one of the pre-update prototypes
    losses['loss'].backward()
    reference = feats.detach().clone().requires_grad_()
    F.cross_entropy(
        F.normalize(reference, dim=1) @ prototypes.t() / TAU,
        labels[idx]).backward()
    torch.testing.assert_close(feats.grad, reference.grad)
    assert not head.instance_memory.requires_grad
    # forward: the logits, no update
    after = head.instance_memory.clone()
    torch.testing.assert_close(
        head(feats.detach()),
        queries @ naive_prototypes(after, labels, 5).t() / TAU)
    assert torch.equal(head.instance_memory, after)


@pytest.mark.parametrize('momentum', [0.0, 0.1, 0.7])
def test_equals_cluster_memory_head_with_one_instance_per_cluster(momentum):
    """Singleton clusters and agreeing memories: same loss, gradient and
    update as ClusterMemoryHead (an outlier sample included)."""
    g = torch.Generator().manual_seed(4)
    features = torch.randn(7, DIM, generator=g)
    labels = torch.tensor([0, 1, 2, -1, 3, 4, 5])
    centroids = features[labels >= 0]
    instance = build_head(momentum=momentum)
    instance.reset(centroids, labels, features=features)
    cluster = MODELS.build(
        dict(type='ClusterMemoryHead', feat_dim=DIM, momentum=momentum))
    cluster.reset(centroids, labels)
    idx = torch.tensor([4, 0, 4, 6, 1, 4, 2])
    feats = torch.randn(len(idx), DIM, generator=g)
    grads = []
    for head in (instance, cluster):
        x = feats.clone().requires_grad_()
        losses = head.loss(x, samples(idx))
        losses['loss'].backward()
        grads.append((losses['loss'].detach(), losses['acc'], x.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    clustered = (labels >= 0).nonzero().flatten()
    torch.testing.assert_close(instance.instance_memory[clustered],
                               cluster.memory)
    torch.testing.assert_close(instance.prototypes(), cluster.memory)


def test_save_load_round_trip_with_other_sizes():
    head, _, _ = ready_head(num_clusters=4, num_samples=25)
    head.loss(torch.randn(3, DIM), samples([0, 1, 2]))
    buffer = io.BytesIO()
    torch.save(head.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state) == {'instance_memory', 'sample_labels', 'cluster_sizes'}
    for fresh in (build_head(), ready_head(num_clusters=2, num_samples=9)[0]):
        fresh.load_state_dict(state)
        assert fresh.num_clusters == 4
        for name in state:
            assert torch.equal(getattr(fresh, name), getattr(head, name))
        torch.testing.assert_close(fresh.prototypes(), head.prototypes())
    fresh = build_head()
    load_state_dict(fresh, state, strict=True)  # mmengine's (resume) path
    assert torch.equal(fresh.instance_memory, head.instance_memory)
    other = MODELS.build(dict(type='InstanceMemoryHead', feat_dim=DIM + 1))
    with pytest.raises(RuntimeError, match='size mismatch'):
        other.load_state_dict(state)


class FakeWorld:
    """mmengine.dist for a 2-rank world; we are rank 0."""

    def __init__(self, other_queries, other_indices):
        self.other = dict(queries=other_queries, indices=other_indices)

    def get_world_size(self):
        return 2

    def all_reduce(self, data, op='sum'):
        assert op == 'max'
        data.clamp_(min=len(self.other['indices']))

    def all_gather(self, data):
        long = data.dtype == torch.long
        theirs = self.other['indices' if long else 'queries']
        pad = len(data) - len(theirs)
        theirs = F.pad(
            theirs,
            (0, pad), value=-1) if long else F.pad(theirs, (0, 0, 0, pad))
        return [data, theirs]


@pytest.mark.parametrize('other_size', [3, 6])
def test_distributed_update_uses_the_gathered_batch(monkeypatch, other_size):
    head, _, _ = ready_head()
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(4, DIM, generator=g)
    idx = torch.tensor([0, 1, 2, 0])
    other_q = F.normalize(torch.randn(other_size, DIM, generator=g), dim=1)
    other_i = torch.randint(0, 30, (other_size, ), generator=g)
    world = FakeWorld(other_q, other_i)
    monkeypatch.setattr(instance_memory_head, 'dist', world)
    monkeypatch.setattr(cluster_memory_head, 'dist', world)
    expected = naive_update(head.instance_memory,
                            torch.cat([F.normalize(feats, dim=1), other_q]),
                            torch.cat([idx, other_i]), 0.2)
    head.loss(feats, samples(idx))
    torch.testing.assert_close(head.instance_memory, expected)
