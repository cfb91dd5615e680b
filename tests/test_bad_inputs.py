"""Bad and degenerate inputs are refused or handled with a logged outcome.

Non-finite values, wrong shapes and out-of-range parameters raise a
ValueError naming the argument; unnormalised features are normalised;
k larger than the data allows is clamped with a warning; a single cluster
is reported. Warnings go through mmengine's current logger, captured here
by a handler on it (MMLogger does not propagate to the root logger that
``caplog`` listens to).
"""
import logging

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from mmengine.logging import MMLogger

from mmcc.clustering import (cluster_features, dbscan_labels, hdbscan_labels,
                             infomap_labels, jaccard_distance, knn_search)
from mmcc.evaluation import ReIDMetric
from mmcc.evaluation.functional import rank_metrics, re_ranking
from mmcc.utils.checks import check_finite, l2_normalised
from mmcc.utils.host import process_memory, reset_peak_memory


class _Records(logging.Handler):

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def text(self):
        return '\n'.join(self.messages)


@pytest.fixture
def mm_warnings():
    """WARNING messages logged to mmengine's current logger."""
    logger = MMLogger.get_current_instance()
    records = _Records()
    logger.addHandler(records)
    yield records
    logger.removeHandler(records)


def blobs(num=5, size=5, dim=16, noise=0.05, seed=0, orthogonal=False):
    """``num`` tight blobs of ``size`` unit vectors around random (or
    orthogonal) centres, and their blob ids."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:num] if orthogonal else rng.standard_normal(
        (num, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.repeat(centres, size, 0) + noise * rng.standard_normal(
        (num * size, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(num), size)


def assert_same_partition(labels, truth):
    # same clusters up to renumbering (labels are numbered by first member)
    assert (labels >= 0).all()
    _, first = np.unique(truth, return_index=True)
    np.testing.assert_array_equal(labels, np.argsort(np.argsort(first))[truth])


# (name, function of the features, name of the features argument)
FEATURE_FUNCTIONS = [
    ('knn_search', lambda x: knn_search(x, 5), 'features'),
    ('jaccard_distance', lambda x: jaccard_distance(x, k1=5, k2=2),
     'features'),
    ('infomap_labels', lambda x: infomap_labels(x, k1=5, k2=2), 'features'),
    ('cluster_features-dbscan',
     lambda x: cluster_features(x, dict(type='dbscan', k1=5, k2=2)),
     'features'),
    ('cluster_features-hdbscan',
     lambda x: cluster_features(x, dict(type='hdbscan', k1=5, k2=2)),
     'features'),
    ('cluster_features-infomap',
     lambda x: cluster_features(x, dict(type='infomap', k1=5, k2=2)),
     'features'),
    ('hdbscan_labels-features',
     lambda x: hdbscan_labels(x, metric='euclidean'), 'distance'),
]
FEATURE_IDS = [f[0] for f in FEATURE_FUNCTIONS]

# ------------------------------------------------------------ non-finite


@pytest.mark.parametrize(
    'fn,arg', [f[1:] for f in FEATURE_FUNCTIONS], ids=FEATURE_IDS)
@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize('as_tensor', [False, True], ids=['array', 'tensor'])
def test_non_finite_features_are_refused(fn, arg, bad, as_tensor):
    x, _ = blobs()
    x[7, 3] = bad
    if as_tensor:
        x = torch.from_numpy(x)
    with pytest.raises(ValueError, match=rf'{arg} contains .*NaN.*Inf'):
        fn(x)


def _distance_with(bad, sparse):
    x, _ = blobs()
    d = np.clip(1 - x @ x.T, 0, None)
    d[2, 5] = d[5, 2] = bad
    return sp.csr_matrix(d) if sparse else d


@pytest.mark.parametrize(
    'fn', [dbscan_labels, hdbscan_labels],
    ids=['dbscan_labels', 'hdbscan_labels'])
@pytest.mark.parametrize('bad', [np.nan, np.inf])
@pytest.mark.parametrize('sparse', [False, True], ids=['dense', 'sparse'])
def test_non_finite_distances_are_refused(fn, bad, sparse):
    with pytest.raises(ValueError, match='distance contains .*NaN.*Inf'):
        fn(_distance_with(bad, sparse))


@pytest.mark.parametrize('bad', [np.nan, -np.inf])
@pytest.mark.parametrize('as_tensor', [False, True], ids=['array', 'tensor'])
def test_rank_metrics_refuses_nan_and_minus_inf(bad, as_tensor):
    # the user's probe: one NaN row gave mAP = inf and top-1 = 100 %
    distmat = np.array([[0.2, 0.5, 0.9], [0.4, bad, 0.1]])
    if as_tensor:
        distmat = torch.from_numpy(distmat)
    with pytest.raises(ValueError, match='distmat contains .*NaN'):
        rank_metrics(distmat, [1, 2], [1, 2, 3], [0, 0], [1, 1, 1])
    # +inf stays allowed (an infinitely far entry, ranked last)
    results = rank_metrics([[0.2, np.inf, 0.9]], [1], [1, 2, 3], [0],
                           [1, 1, 1])
    assert results['top1'] == 1.


def _re_ranking_inputs(num_query=4, num_gallery=10):
    x, _ = blobs(num=2, size=7)
    d = np.clip(2 - 2 * x @ x.T, 0, None)
    return dict(
        q_g_dist=d[:num_query, num_query:],
        q_q_dist=d[:num_query, :num_query],
        g_g_dist=d[num_query:, num_query:])


@pytest.mark.parametrize('name', ['q_g_dist', 'q_q_dist', 'g_g_dist'])
@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_re_ranking_refuses_non_finite(name, bad):
    inputs = _re_ranking_inputs()
    inputs[name] = inputs[name].copy()
    inputs[name][1, 2] = bad
    with pytest.raises(ValueError, match=f'{name} contains .*NaN.*Inf'):
        re_ranking(**inputs, k1=3, k2=2)


def _metric_samples(feats):
    ids = [1, 2, 1, 2, 3, 1]
    return [
        dict(pred_feat=f, gt_label=i, camid=q, is_query=q == 0)
        for f, i, q in zip(feats, ids, [0, 0, 1, 1, 1, 1])
    ]


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
@pytest.mark.parametrize('rerank', [False, True])
def test_reid_metric_refuses_non_finite_features(bad, rerank):
    feats = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    feats[3, 1] = bad
    metric = ReIDMetric(rerank=rerank, k1=2, k2=2)
    metric.process(None, _metric_samples(feats))
    with pytest.raises(ValueError, match='pred_feat contains .*NaN.*Inf'):
        metric.evaluate(size=6)
    # finite features still evaluate
    metric = ReIDMetric(rerank=rerank, k1=2, k2=2)
    metric.process(None, _metric_samples(torch.randn(6, 4)))
    assert len(metric.evaluate(size=6)) == 5


def test_check_finite_counts_and_passes_non_float():
    with pytest.raises(ValueError, match='2 NaN and 1 Inf'):
        check_finite(np.array([np.nan, 1, np.nan, -np.inf]), 'x')
    check_finite(np.arange(4), 'ids')  # integers cannot be non-finite
    check_finite(torch.arange(4), 'ids')


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_check_finite_on_tensors_needs_no_copy(dtype):
    # summing in float64 first copied the features: 16 GB for 10^6 x 2048
    # float32, which ran the 1M pseudo-labelling out of memory
    x = torch.randn(4096, 8192, generator=torch.Generator().manual_seed(0))
    x = x.to(dtype)  # 128 / 64 MiB
    if not reset_peak_memory():
        pytest.skip('needs /proc/self/clear_refs')
    before = process_memory('VmRSS')
    check_finite(x, 'x')
    assert process_memory('VmHWM') - before < 0.1 * x.nbytes
    x[7, 3] = float('nan')
    x[9, 1] = float('inf')
    with pytest.raises(ValueError, match='1 NaN and 1 Inf'):
        check_finite(x, 'x')


# ------------------------------------------------------ unnormalised input


def test_normalised_input_is_passed_through_untouched():
    x, _ = blobs()
    assert l2_normalised(x) is x
    t = torch.from_numpy(x)
    assert l2_normalised(t) is t
    # within the tolerance: still untouched
    slightly = x * np.float32(1 + 5e-4)
    assert l2_normalised(slightly) is slightly


@pytest.mark.parametrize('as_tensor', [False, True], ids=['array', 'tensor'])
def test_unnormalised_features_are_normalised(as_tensor):
    x, truth = blobs(seed=3)
    scale = np.random.default_rng(0).uniform(0.2, 5, (len(x), 1))
    scaled = (x * scale).astype(np.float32)
    unit = l2_normalised(scaled)
    assert np.abs(np.linalg.norm(unit, axis=1) - 1).max() < 1e-6
    if as_tensor:
        scaled = torch.from_numpy(scaled)
    ids, sims = knn_search(scaled, 6)
    want_ids, want_sims = knn_search(x, 6)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(sims, want_sims, atol=1e-6)
    np.testing.assert_allclose(
        jaccard_distance(scaled, k1=6, k2=3).toarray(),
        jaccard_distance(x, k1=6, k2=3).toarray(),
        atol=1e-5)
    np.testing.assert_array_equal(
        infomap_labels(scaled, k1=6, k2=3), infomap_labels(x, k1=6, k2=3))
    cfg = dict(type='dbscan', k1=6, k2=3)
    assert_same_partition(cluster_features(scaled, cfg), truth)


@pytest.mark.parametrize(
    'fn,arg', [f[1:] for f in FEATURE_FUNCTIONS[:-1]], ids=FEATURE_IDS[:-1])
def test_zero_feature_row_is_refused(fn, arg):
    x, _ = blobs()
    x[4] = 0
    with pytest.raises(ValueError, match=f'{arg} has 1 row.* of norm 0'):
        fn(x)


# ----------------------------------------------------- shapes, parameters


@pytest.mark.parametrize(
    'fn,arg', [f[1:] for f in FEATURE_FUNCTIONS], ids=FEATURE_IDS)
@pytest.mark.parametrize(
    'shape', [(16, ), (5, 4, 3), (0, 16), (5, 0)],
    ids=['1-D', '3-D', 'no rows', 'no columns'])
def test_wrong_feature_shapes_are_refused(fn, arg, shape):
    with pytest.raises(ValueError, match=arg):
        fn(np.ones(shape, np.float32))


@pytest.mark.parametrize(
    'fn', [dbscan_labels, hdbscan_labels],
    ids=['dbscan_labels', 'hdbscan_labels'])
@pytest.mark.parametrize('shape', [(6, ), (4, 6), (2, 2, 2)])
def test_non_square_distances_are_refused(fn, shape):
    with pytest.raises(ValueError, match='distance must be a square'):
        fn(np.zeros(shape, np.float32))


def _features():
    return blobs()[0]


BAD_PARAMETERS = [
    (lambda: knn_search(_features(), 0), '^k must be'),
    (lambda: knn_search(_features(), -3), '^k must be'),
    (lambda: knn_search(_features(), 2.5), '^k must be'),
    (lambda: jaccard_distance(_features(), k1=0), '^k1 must be'),
    (lambda: jaccard_distance(_features(), k1=6, k2=0), '^k2 must be'),
    (lambda: jaccard_distance(_features(), k1=4, k2=6), 'k2=6 must not'),
    (lambda: infomap_labels(_features(), k1=0), '^k1 must be'),
    (lambda: infomap_labels(_features(), k2=-1), '^k2 must be'),
    (lambda: infomap_labels(_features(), min_sim=float('nan')),
     '^min_sim must be'),
    (lambda: cluster_features(_features(), dict(k1=0)), '^k1 must be'),
    (lambda: cluster_features(_features(), dict(k2=0)), '^k2 must be'),
    (lambda: cluster_features(_features(), dict(k1=30, k2=40)),
     'k2=40 must not'),
    (lambda: cluster_features(_features(), dict(type='hdbscan', k2=0)),
     '^k2 must be'),
    (lambda: cluster_features(_features(), dict(type='infomap', k1=0)),
     '^k1 must be'),
    (lambda: cluster_features(_features(), dict(eps=0)), '^eps must be'),
    (lambda: cluster_features(_features(), dict(eps=-0.5)), '^eps must be'),
    (lambda: cluster_features(_features(), dict(eps=float('nan'))),
     '^eps must be'),
    (lambda: cluster_features(_features(), dict(eps=float('inf'))),
     '^eps must be'),
    (lambda: cluster_features(_features(), dict(min_samples=0)),
     '^min_samples must be'),
    (lambda: dbscan_labels(np.zeros((4, 4)), eps=0), '^eps must be'),
    (lambda: dbscan_labels(np.zeros(
        (4, 4)), min_samples=0), '^min_samples must be'),
    (lambda: hdbscan_labels(np.zeros(
        (4, 4)), min_samples=0), '^min_samples must be'),
    (lambda: hdbscan_labels(np.zeros(
        (4, 4)), min_cluster_size=0), '^min_cluster_size must be'),
    (lambda: re_ranking(**_re_ranking_inputs(), k1=0), '^k1 must be'),
    (lambda: re_ranking(**_re_ranking_inputs(), k2=0), '^k2 must be'),
    (lambda: re_ranking(**_re_ranking_inputs(), lambda_value=1.5),
     '^lambda_value must be'),
    (lambda: re_ranking(**_re_ranking_inputs(), lambda_value=float('nan')),
     '^lambda_value must be'),
    (lambda: re_ranking(**dict(
        _re_ranking_inputs(), q_q_dist=np.zeros(
            (3, 3)))), 'q_q_dist must have shape'),
    (lambda: re_ranking(**dict(
        _re_ranking_inputs(), g_g_dist=np.zeros(
            (10, 9)))), 'g_g_dist must have shape'),
    (lambda: re_ranking(**dict(_re_ranking_inputs(), q_g_dist=np.zeros(4))),
     'q_g_dist must be 2-D'),
    (lambda: rank_metrics(np.zeros(3), [1], [1, 2, 3], [0], [1, 1, 1]),
     'distmat must be 2-D'),
]


@pytest.mark.parametrize(
    'call,match',
    BAD_PARAMETERS,
    ids=[str(i) for i in range(len(BAD_PARAMETERS))])
def test_bad_parameters_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_re_ranking_allows_k2_above_k1():
    # the local query expansion may be wider than R in re-ranking
    result = re_ranking(**_re_ranking_inputs(), k1=2, k2=6)
    assert result.shape == (4, 10) and np.isfinite(result).all()


# ------------------------------------------------- degenerate clusterings


def test_knn_clamps_k_to_n_with_a_warning(mm_warnings):
    ids, _ = knn_search(_features()[:3], 30)
    assert ids.shape == (3, 3)
    assert 'k=30' in mm_warnings.text() and 'N=3' in mm_warnings.text()


def test_jaccard_warns_when_k1_exceeds_n(mm_warnings):
    jaccard_distance(_features(), k1=30, k2=6)
    assert 'k1=30' in mm_warnings.text() and 'N=25' in mm_warnings.text()


def test_infomap_clamps_k1_with_a_warning(mm_warnings):
    x, truth = blobs(orthogonal=True)
    labels = infomap_labels(x, k1=30, k2=4)
    assert 'k1=30' in mm_warnings.text() and 'k1=25' in mm_warnings.text()
    assert_same_partition(labels, truth)


@pytest.mark.parametrize('kind', ['dbscan', 'hdbscan'])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_five_blobs_of_five_points_give_five_clusters(kind, seed, mm_warnings):
    # N = 25 < k1 = 30, the paper's DBSCAN settings (eps 0.6, min_samples 4,
    # k2 6). Unclamped, every kNN list is the whole set and the blobs merge.
    x, truth = blobs(seed=seed)
    unclamped = dbscan_labels(jaccard_distance(x, k1=30, k2=6))
    assert unclamped.max() + 1 < 5
    labels = cluster_features(x, dict(type=kind, k1=30, k2=6))
    assert_same_partition(labels, truth)
    text = mm_warnings.text()
    assert 'k1=30' in text and 'N=25' in text and 'using k1=8' in text


def test_no_clamp_warning_when_k1_is_small(mm_warnings):
    x, truth = blobs(num=6, size=12)
    labels = cluster_features(x, dict(type='dbscan', k1=10, k2=3))
    assert_same_partition(labels, truth)
    assert mm_warnings.messages == []


def test_single_cluster_is_reported(mm_warnings):
    x, _ = blobs(num=1, size=25, noise=0.1)
    labels = cluster_features(x, dict(type='dbscan'))
    assert labels.max() == 0
    assert 'single cluster' in mm_warnings.text()
    assert 'constant loss' in mm_warnings.text()


def test_no_cluster_is_returned_as_all_noise(mm_warnings):
    labels = cluster_features(
        np.eye(12, 64, dtype=np.float32),
        dict(type='dbscan', k1=4, k2=2, min_samples=13))
    np.testing.assert_array_equal(labels, np.full(12, -1))
    assert 'single cluster' not in mm_warnings.text()


@pytest.mark.parametrize('cfg,error', [
    (dict(eps=0), ValueError),
    (dict(min_samples=0), ValueError),
    (dict(type='hdbscan', min_cluster_size=0), ValueError),
    (dict(min_sim=0.5), TypeError),
])
def test_cluster_config_fails_before_the_distance(cfg, error, monkeypatch):
    import mmcc.clustering.cluster as cluster_module

    def never(*args, **kwargs):
        raise AssertionError('the distance was computed')

    monkeypatch.setattr(cluster_module, 'jaccard_distance', never)
    with pytest.raises(error):
        cluster_features(_features(), cfg)
