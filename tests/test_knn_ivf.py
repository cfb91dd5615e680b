"""The approximate inverted-file kNN (PCA, IVF, exact re-scoring) and the
synthetic re-ID embeddings its benchmark runs on."""
import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from mmcc.clustering import cluster_features
from mmcc.clustering import knn as knn_module
from mmcc.clustering import knn_search
from mmcc.clustering.knn_ivf import CellJoin, ivf_search, project, train_cells
from mmcc.testing.embeddings import (MAX_IDENTITY_SIZE, make_reid_embeddings,
                                     neighbour_statistics)

needs_faiss = pytest.mark.skipif(
    not knn_module.faiss_available(), reason='needs faiss')


@pytest.fixture(scope='module')
def embeddings():
    return make_reid_embeddings(3000, dim=256, seed=3)


def _recall(approx, exact):
    return np.mean(
        [np.intersect1d(a, e).size / e.size for a, e in zip(approx, exact)])


def test_reid_embeddings_are_seeded_unit_rows_with_identities(embeddings):
    feats, labels = embeddings
    again, labels_again = make_reid_embeddings(3000, dim=256, seed=3)
    np.testing.assert_array_equal(feats, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert feats.dtype == np.float32 and feats.shape == (3000, 256)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    assert (labels == -1).sum() == 300  # distractor_frac 0.1
    sizes = np.bincount(labels[labels >= 0])
    sizes = sizes[sizes > 0]
    assert sizes.min() >= 1 and sizes.max() <= MAX_IDENTITY_SIZE
    # an identity's images are contiguous (its tracklets follow each other)
    starts = np.flatnonzero(np.diff(labels[labels >= 0]) != 0).size + 1
    assert starts == sizes.size
    other, _ = make_reid_embeddings(3000, dim=256, seed=4)
    assert not np.array_equal(feats, other)


def test_reid_embeddings_have_the_structure_they_claim(embeddings):
    feats, labels = embeddings
    stats = neighbour_statistics(feats, labels)
    # a strong common component: random pairs are far from orthogonal
    assert stats['pair_mean'] > 0.3 and stats['mean_norm'] > 0.5
    # neighbours are closer than random pairs and partly the same identity
    assert stats['sim_1'] > stats['sim_k'] > stats['pair_mean']
    assert 0.1 < stats['precision_1'] < 0.95
    # a decaying spectrum: a few axes hold much of the variance
    assert stats['top64_variance'] > 0.5
    # without the identity and tracklet parts, neighbours are chance
    flat, flat_labels = make_reid_embeddings(
        3000, dim=256, seed=3, identity=0.0, tracklet=0.0, family=0.0)
    assert neighbour_statistics(flat, flat_labels)['precision_1'] < 0.1


def test_make_reid_embeddings_refuses_unknown_weights():
    with pytest.raises(TypeError, match='unknown weights'):
        make_reid_embeddings(10, dim=8, colour=1.0)


def test_project_keeps_the_leading_variance():
    rng = np.random.default_rng(0)
    # variance 9 on axis 0, 4 on axis 1, 0.01 elsewhere
    x = rng.standard_normal((2000, 16)).astype(np.float32) * 0.1
    x[:, 0] *= 30
    x[:, 1] *= 20
    z = project(x, 2, 1000, rng)
    assert z.shape == (2000, 2)
    np.testing.assert_allclose(z.mean(0), 0, atol=0.2)
    np.testing.assert_allclose(z.var(0), [9, 4], rtol=0.15)
    # the projection is (up to sign) the two leading coordinates
    for j in range(2):
        corr = np.corrcoef(z[:, j], x[:, j])[0, 1]
        assert abs(corr) > 0.99


@needs_faiss
def test_ivf_returns_exact_similarities_and_high_recall(embeddings):
    feats, _ = embeddings
    exact, _ = knn_search(feats, 20, method='exact')
    info = {}
    ids, sims = ivf_search(feats, 20, pca_dim=64, info=info)
    assert ids.shape == sims.shape == (3000, 20)
    assert (ids >= 0).all()
    # re-scored: the similarities are the float32 inner products
    truth = np.einsum('nd,nkd->nk', feats, feats[ids])
    np.testing.assert_allclose(sims, truth, atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # best first
    # nprobe was calibrated until the sampled recall reached the target
    assert info['pca_dim'] == 64 and info['nlist'] >= 1
    assert info['calibration_recall'] >= 0.97 or \
        info['nprobe'] == info['nlist']
    assert _recall(ids, exact) > 0.9
    # at least one refinement round, none loses recall
    rounds = info['recall_rounds']
    assert 2 <= len(rounds) <= 4 and rounds == sorted(rounds)
    assert info['sample_recall'] == rounds[-1]


@needs_faiss
def test_ivf_calibration_raises_nprobe_with_the_target(embeddings):
    feats, _ = embeddings
    low, high = {}, {}
    ivf_search(feats, 20, pca_dim=64, recall_target=0.5, info=low)
    ivf_search(feats, 20, pca_dim=64, recall_target=0.999, info=high)
    assert low['nprobe'] < high['nprobe']
    assert high['calibration_recall'] > low['calibration_recall']
    fixed = {}
    ivf_search(feats, 20, pca_dim=64, nprobe=3, info=fixed)
    assert fixed['nprobe'] == 3 and fixed['calibration_recall'] is None
    with pytest.raises(ValueError, match='recall_target'):
        ivf_search(feats, 20, recall_target=0)


@needs_faiss
def test_knn_search_ivf_is_canonical_and_passes_options(embeddings):
    feats, _ = embeddings
    info = {}
    ids, sims = knn_search(feats, 15, method='ivf', nprobe=4, info=info)
    np.testing.assert_array_equal(ids[:, 0], np.arange(len(feats)))
    assert info['nprobe'] == 4
    assert (ids[:, 1:] != np.arange(len(feats))[:, None]).all()


@needs_faiss
def test_clustering_with_ivf_agrees_with_exact(embeddings):
    feats, _ = embeddings
    cfg = dict(type='dbscan', eps=0.6, min_samples=4, k1=20, k2=6)
    exact = cluster_features(feats, cfg)
    approx = cluster_features(
        feats, dict(cfg, knn='ivf', knn_options=dict(recall_target=0.99)))
    assert exact.max() >= 2
    assert adjusted_rand_score(exact, approx) > 0.9


@needs_faiss
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_cell_join_ranks_the_probed_cells_by_projected_distance(
        embeddings, dtype):
    feats, _ = embeddings
    rng = np.random.default_rng(0)
    z = project(feats, 32, 3000, rng)
    centroids, assign = train_cells(z, 20, rng)
    np.testing.assert_array_equal(
        assign, ((z[:, None] - centroids[None])**2).sum(-1).argmin(1))
    join = CellJoin(z, centroids, assign, dtype)
    # its own cell first, then the cells by centroid distance
    np.testing.assert_array_equal(join.cell_order[:, 0], np.arange(20))
    # every cell probed: the top m by projected L2 distance over all rows
    cand = join.all_candidates(20, 25)
    dist = ((z[:, None] - z[None])**2).sum(-1)
    truth = np.sort(dist, 1)[:, 24]
    got = np.take_along_axis(dist, cand, 1)
    slack = 1e-4 if dtype == torch.float32 else 0.05 * dist.mean()
    assert (got.max(1) <= truth + slack).all()
    assert (cand >= 0).all() and (np.sort(cand, 1)[:, 1:] != np.sort(
        cand, 1)[:, :-1]).all()  # distinct
    # 3 cells probed: candidates only from the 3 cells nearest to the own
    few = join.all_candidates(3, 25)
    allowed = join.cell_order[assign, :3]
    cells = np.where(few >= 0, assign[np.maximum(few, 0)], -1)
    assert ((cells[..., None] == allowed[:, None]).any(-1) | (few < 0)).all()
    # the calibration's per-row search is the join's, row for row
    rows = np.array([5, 17, 2999, 1200, 6])
    np.testing.assert_array_equal(
        np.sort(join.candidates_of(rows, 3, 25), 1), np.sort(few[rows], 1))


@needs_faiss
def test_ivf_cost_cap_and_product_dtype(embeddings):
    feats, _ = embeddings
    capped = {}
    ivf_search(
        feats,
        20,
        pca_dim=64,
        nlist=30,
        recall_target=1.0,
        max_scan_rows=500,
        info=capped)
    # 500 candidate rows = 5 cells of 100 rows
    assert capped['nprobe'] == 5 and capped['calibration_recall'] < 1
    for name in ('float32', 'bfloat16'):
        info = {}
        ivf_search(feats, 20, pca_dim=64, product_dtype=name, info=info)
        assert info['product_dtype'] == name
        assert info['sample_recall'] >= 0.97
    with pytest.raises(ValueError, match='product_dtype'):
        ivf_search(feats, 20, product_dtype='float16')
