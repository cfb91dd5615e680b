"""The vectorised momentum update against the reference's per-sample rules."""
import pytest
import torch
import torch.nn.functional as F

from mmcc.models.functional import momentum_update


def sequential_mean(memory, queries, labels, m):
    """The reference rule: one sample at a time, in batch order."""
    memory = memory.clone()
    for query, label in zip(queries, labels.tolist()):
        if label < 0:
            continue
        memory[label] = m * memory[label] + (1 - m) * query
        memory[label] /= memory[label].norm()
    return memory


def sequential_hard(memory, queries, labels, m):
    """The reference hard rule: per cluster, its least similar query."""
    memory = memory.clone()
    members = {}
    for b, label in enumerate(labels.tolist()):
        if label >= 0:
            members.setdefault(label, []).append(b)
    for label, batch_indices in members.items():
        sims = [float(queries[b] @ memory[label]) for b in batch_indices]
        hardest = batch_indices[min(range(len(sims)), key=sims.__getitem__)]
        memory[label] = m * memory[label] + (1 - m) * queries[hardest]
        memory[label] /= memory[label].norm()
    return memory


def random_batch(seed, num_clusters=40, dim=32, batch=96, outliers=True):
    """Unit memory and queries; labels with duplicates in random order,
    uneven counts and (optionally) some -1."""
    g = torch.Generator().manual_seed(seed)
    memory = F.normalize(torch.randn(num_clusters, dim, generator=g), dim=1)
    queries = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    # Skewed cluster choice: a few clusters get many samples, some one.
    weights = torch.rand(num_clusters // 2, generator=g)**3 + 1e-3
    labels = torch.multinomial(
        weights, batch, replacement=True, generator=g) * 2 + 1
    if outliers:
        labels[torch.rand(batch, generator=g) < 0.1] = -1
    return memory, queries, labels


MOMENTA = [0.0, 0.1, 0.2, 0.5, 0.9, 1 - 1e-6, 1.0]


@pytest.mark.parametrize('momentum', MOMENTA)
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_mean_mode_equals_sequential_rule(momentum, seed):
    memory, queries, labels = random_batch(seed)
    assert labels[labels >= 0].bincount().max() > 5  # real duplicates
    expected = sequential_mean(memory, queries, labels, momentum)
    momentum_update(memory, queries, labels, momentum, mode='mean')
    assert torch.allclose(memory, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize('momentum', MOMENTA)
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_hard_mode_equals_per_cluster_rule(momentum, seed):
    memory, queries, labels = random_batch(seed)
    expected = sequential_hard(memory, queries, labels, momentum)
    momentum_update(memory, queries, labels, momentum, mode='hard')
    assert torch.allclose(memory, expected, atol=1e-5, rtol=0)


def test_pk_sized_batch_both_modes():
    # The training shape: 16 instances of each of 16 clusters, shuffled.
    g = torch.Generator().manual_seed(3)
    memory = F.normalize(torch.randn(500, 64, generator=g), dim=1)
    queries = F.normalize(torch.randn(256, 64, generator=g), dim=1)
    ids = torch.randperm(500, generator=g)[:16]
    labels = ids.repeat_interleave(16)[torch.randperm(256, generator=g)]
    for mode, rule in (('mean', sequential_mean), ('hard', sequential_hard)):
        expected = rule(memory, queries, labels, 0.1)
        updated = momentum_update(memory.clone(), queries, labels, 0.1, mode)
        assert torch.allclose(updated, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize('mode', ['mean', 'hard'])
def test_updates_in_place_and_rows_stay_unit(mode):
    memory, queries, labels = random_batch(4)
    ptr = memory.data_ptr()
    out = momentum_update(memory, queries, labels, 0.2, mode)
    assert out is memory and memory.data_ptr() == ptr
    touched = labels[labels >= 0].unique()
    assert torch.allclose(
        memory[touched].norm(dim=1), torch.ones(len(touched)), atol=1e-6)


@pytest.mark.parametrize('mode', ['mean', 'hard'])
def test_negative_labels_are_ignored(mode):
    memory, queries, labels = random_batch(5)
    before = memory.clone()
    momentum_update(memory, queries, labels, 0.2, mode)
    untouched = torch.ones(len(memory), dtype=torch.bool)
    untouched[labels[labels >= 0]] = False
    assert untouched.any()
    assert torch.equal(memory[untouched], before[untouched])
    # Dropping the outliers beforehand gives the same memory.
    kept = labels >= 0
    again = momentum_update(before.clone(), queries[kept], labels[kept], 0.2,
                            mode)
    assert torch.allclose(memory, again, atol=1e-6, rtol=0)
    # A batch of outliers only changes nothing.
    snapshot = before.clone()
    momentum_update(before, queries, torch.full_like(labels, -1), 0.2, mode)
    assert torch.equal(before, snapshot)


@pytest.mark.parametrize('mode', ['mean', 'hard'])
def test_half_queries_are_cast_and_no_graph_is_built(mode):
    memory, queries, labels = random_batch(6, outliers=False)
    expected = momentum_update(memory.clone(),
                               queries.half().float(), labels, 0.1, mode)
    leaf = queries.half().requires_grad_()
    momentum_update(memory, leaf, labels, 0.1, mode)
    assert memory.dtype == torch.float32 and not memory.requires_grad
    assert torch.allclose(memory, expected, atol=1e-6, rtol=0)


def test_single_query_with_zero_momentum_replaces_the_row():
    memory = F.normalize(torch.randn(3, 4), dim=1)
    query = F.normalize(torch.randn(1, 4), dim=1)
    momentum_update(memory, query, torch.tensor([2]), 0.0)
    assert torch.allclose(memory[2], query[0])


def test_rejects_bad_arguments():
    memory, queries, labels = random_batch(7)
    with pytest.raises(ValueError):
        momentum_update(memory, queries, labels, 0.1, mode='median')
    with pytest.raises(ValueError):
        momentum_update(memory, queries, labels, 1.5)
    with pytest.raises(ValueError):
        momentum_update(memory, queries[:, :5], labels, 0.1)
    with pytest.raises(ValueError):
        momentum_update(memory, queries, labels[:-1], 0.1)
