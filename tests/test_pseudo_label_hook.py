import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from mmcc.clustering import cluster_centroids, pseudo_label_stats
from mmcc.engine.hooks.pseudo_label_hook import PseudoLabelHook


def test_cluster_centroids_are_means_and_ignore_outliers():
    feats = torch.tensor([[1., 0.], [3., 0.], [0., 2.], [9., 9.]])
    labels = np.array([0, 0, 1, -1])
    centroids = cluster_centroids(feats, labels, 2)
    torch.testing.assert_close(centroids, torch.tensor([[2., 0.], [0., 2.]]))


def test_pseudo_label_stats_counts_quantiles_and_agreement():
    labels = np.array([0, 0, 0, 1, 1, -1, -1, 2])
    true_ids = np.array([5, 5, 6, 7, 7, 8, 8, 9])
    stats = pseudo_label_stats(labels, true_ids)
    assert stats['num_clusters'] == 3
    assert stats['num_outliers'] == 2
    assert stats['outlier_ratio'] == pytest.approx(0.25)
    # cluster sizes 3, 2, 1
    assert (stats['size_min'], stats['size_median'],
            stats['size_max']) == (1.0, 2.0, 3.0)
    kept = labels >= 0
    assert stats['nmi'] == pytest.approx(
        normalized_mutual_info_score(true_ids[kept], labels[kept]))
    assert stats['ari'] == pytest.approx(
        adjusted_rand_score(true_ids[kept], labels[kept]))
    # over all points, the two outliers form one more cluster
    with_noise = np.array([0, 0, 0, 1, 1, 3, 3, 2])
    assert stats['nmi_all'] == pytest.approx(
        normalized_mutual_info_score(true_ids, with_noise))
    assert stats['ari_all'] == pytest.approx(
        adjusted_rand_score(true_ids, with_noise))
    assert stats['nmi_all'] != pytest.approx(stats['nmi'])


def test_all_points_scores_do_not_reward_outliers():
    true_ids = np.repeat(np.arange(50), 4)
    perfect = pseudo_label_stats(true_ids.copy(), true_ids)
    assert perfect['nmi_all'] == pytest.approx(1.0)
    # dropping half the identities to noise keeps the clustered points pure
    # (nmi 1) but must cost the all-points scores
    half = np.where(true_ids < 25, true_ids, -1)
    stats = pseudo_label_stats(half, true_ids)
    assert stats['nmi'] == pytest.approx(1.0)
    assert 0.0 < stats['nmi_all'] < 0.95
    assert 0.0 < stats['ari_all'] < 0.95
    # nothing clustered scores 0, not the high NMI that singletons get
    none = pseudo_label_stats(np.full(200, -1), true_ids)
    assert none['nmi_all'] == pytest.approx(0.0)
    assert none['ari_all'] == pytest.approx(0.0)


def test_pseudo_label_stats_without_true_ids_or_clusters():
    stats = pseudo_label_stats(np.array([-1, -1, -1]))
    assert stats['num_clusters'] == 0 and stats['outlier_ratio'] == 1.0
    assert 'nmi' not in stats
    # all noise with true ids: no clustered pair, but the all-points scores
    # are defined (one cluster of noise)
    stats = pseudo_label_stats(np.array([-1, -1, -1]), np.array([1, 1, 2]))
    assert 'nmi' not in stats
    assert stats['ari_all'] == pytest.approx(0.0)


def test_hook_refuses_a_missing_dataloader_field():

    class _Runner:
        cfg = {}

    hook = PseudoLabelHook(cluster=dict(type='dbscan'))
    with pytest.raises(KeyError, match='cluster_dataloader'):
        hook._build_dataloader(_Runner())


@pytest.mark.parametrize('loader, persistent', [
    (dict(num_workers=2), True),
    (dict(num_workers=2, persistent_workers=False), False),
    (dict(num_workers=0), None),
])
def test_hook_keeps_its_loader_workers_between_epochs(loader, persistent):
    # The hook embeds the training set every epoch with one loader; with
    # workers, they persist unless the config says otherwise (torch refuses
    # persistent workers without workers).

    class _Runner:
        seed = 0
        cfg = dict(cluster_dataloader=loader)
        built = []

        def build_dataloader(self, cfg, seed):
            self.built.append(cfg)
            return object()

    hook = PseudoLabelHook(cluster=dict(type='dbscan'))
    runner = _Runner()
    first = hook._build_dataloader(runner)
    assert hook._build_dataloader(runner) is first
    assert len(runner.built) == 1
    assert runner.built[0].get('persistent_workers') == persistent
    assert 'persistent_workers' not in loader or persistent is False


def test_replayed_batches_read_the_loader_once():
    from mmcc.engine.hooks.pseudo_label_hook import ReplayedBatches

    class _Loader:
        dataset = list(range(6))
        reads = 0

        def __len__(self):
            return 3

        def __iter__(self):
            type(self).reads += 1
            for start in range(0, 6, 2):
                yield dict(inputs=torch.arange(start, start + 2))

    loader = _Loader()
    replayed = ReplayedBatches(loader)
    assert len(replayed) == 3 and replayed.dataset is loader.dataset
    # an interrupted first pass caches nothing
    next(iter(replayed))
    first = list(replayed)
    assert _Loader.reads == 2
    again = list(replayed)
    assert _Loader.reads == 2  # replayed, not read
    assert [b['inputs'].tolist() for b in again] == [[0, 1], [2, 3], [4, 5]]
    assert all(a is b for a, b in zip(first, again))


def test_hook_replays_its_batches_only_when_asked():
    from mmcc.engine.hooks.pseudo_label_hook import ReplayedBatches

    class _Runner:
        seed = 0
        cfg = dict(cluster_dataloader=dict(num_workers=2))
        built = []

        def build_dataloader(self, cfg, seed):
            self.built.append(cfg)
            return type('Loader', (), dict(dataset=[]))()

    cached = PseudoLabelHook(cluster=dict(type='dbscan'), cache_batches=True)
    assert isinstance(cached._build_dataloader(_Runner()), ReplayedBatches)
    # read once: its workers need not persist
    assert 'persistent_workers' not in _Runner.built[-1]
    plain = PseudoLabelHook(cluster=dict(type='dbscan'))
    assert not isinstance(plain._build_dataloader(_Runner()), ReplayedBatches)
