"""Tests of the pseudo-labelling core (mmcc.clustering)."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import adjusted_rand_score

import mmcc.clustering.k_reciprocal as k_reciprocal
import mmcc.clustering.knn as knn_module
import mmcc.clustering.knn_screened as screened_module
from mmcc.clustering import (cluster_features, compact_labels, dbscan_labels,
                             hdbscan_labels, infomap_labels, jaccard_distance,
                             knn_search, neighbour_graph)
from mmcc.testing.naive_k_reciprocal import naive_jaccard_distance


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def planted(num_clusters=6, size=12, dim=32, spread=0.25, outliers=4, seed=0):
    """Tight clusters + isolated outliers; labels -1 for outliers."""
    rng = np.random.default_rng(seed)
    centers = unit(rng.standard_normal((num_clusters, dim)))
    feats = [
        centers[c] + spread / np.sqrt(dim) * rng.standard_normal((size, dim))
        for c in range(num_clusters)
    ]
    feats.append(rng.standard_normal((outliers, dim)))
    labels = np.concatenate([np.full(size, c) for c in range(num_clusters)] +
                            [np.full(outliers, -1)])
    order = rng.permutation(labels.size)
    return unit(np.concatenate(feats))[order], labels[order]


def with_ties_and_duplicates(n=160, dim=16, seed=0):
    """Clustered data, coarsely quantised (many equal inner products), with
    groups of exact duplicates."""
    feats, _ = planted(
        num_clusters=8,
        size=(n - 8) // 8,
        dim=dim,
        spread=0.6,
        outliers=8,
        seed=seed)
    feats = unit(np.round(feats * 4) / 4)
    feats[1] = feats[0]
    feats[2] = feats[0]
    feats[3] = feats[0]
    feats[4] = feats[0]  # five identical points
    feats[10] = feats[11]
    return feats


def sparse_to_dense(dist, missing=1.0):
    full = np.full(dist.shape, missing, dtype=np.float32)
    coo = dist.tocoo()
    full[coo.row, coo.col] = coo.data
    return full


# --------------------------------------------------------------------- kNN


def test_knn_self_first_and_canonical_order_with_duplicates():
    feats = with_ties_and_duplicates()
    ids, sims = knn_search(feats, 10)
    n = len(feats)
    assert ids.shape == (n, 10) and ids.dtype == np.int64
    assert sims.shape == (n, 10) and sims.dtype == np.float32
    np.testing.assert_array_equal(ids[:, 0], np.arange(n))
    # the duplicates of point 0 follow it, in index order
    np.testing.assert_array_equal(ids[0, :5], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(ids[3, :5], [3, 0, 1, 2, 4])
    rest_sims, rest_ids = sims[:, 1:], ids[:, 1:]
    assert (np.diff(rest_sims, axis=1) <= 0).all()
    tie = np.diff(rest_sims, axis=1) == 0
    assert (np.diff(rest_ids, axis=1)[tie] > 0).all()
    for row in ids:
        assert len(set(row.tolist())) == len(row)


@pytest.mark.skipif(not knn_module.faiss_available(), reason='needs faiss')
def test_knn_faiss_and_torch_fallback_agree(monkeypatch):
    feats, _ = planted(dim=48, spread=0.8, seed=3)
    ids_f, sims_f = knn_search(feats, 8, backend='faiss')
    ids_t, sims_t = knn_search(torch.from_numpy(feats), 8, backend='torch')
    np.testing.assert_array_equal(ids_f, ids_t)
    np.testing.assert_allclose(sims_f, sims_t, atol=1e-6)
    # without faiss installed, 'auto' falls back to torch
    monkeypatch.setattr(knn_module, 'faiss', None)
    ids_auto, _ = knn_search(feats, 8)
    np.testing.assert_array_equal(ids_auto, ids_f)


def test_knn_clamps_k_and_handles_one_point():
    ids, sims = knn_search(unit(np.eye(3, 5)), 30)
    assert ids.shape == (3, 3)
    np.testing.assert_array_equal(ids[:, 0], [0, 1, 2])
    ids, _ = knn_search(unit(np.ones((1, 4))), 30)
    np.testing.assert_array_equal(ids, [[0]])


@pytest.mark.skipif(not knn_module.faiss_available(), reason='needs faiss')
@pytest.mark.parametrize('method', ['hnsw', 'ivf'])
def test_approximate_knn_is_canonical_and_close(method):
    feats, _ = planted(num_clusters=20, size=20, dim=32, spread=0.5, seed=1)
    exact, _ = knn_search(feats, 10)
    approx, _ = knn_search(feats, 10, method=method)
    np.testing.assert_array_equal(approx[:, 0], np.arange(len(feats)))
    recall = np.mean(
        [np.intersect1d(a, b).size / a.size for a, b in zip(exact, approx)])
    assert recall > 0.9


def test_screen_error_bound_holds_for_bf16_products():
    # bf16 screen vs float64 truth, rows of uneven norm and a dominant
    # coordinate (the worst case of the per-product rounding).
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 256)) * rng.uniform(0.2, 3.0, (300, 1))
    x[:20, 0] += 40
    x = x.astype(np.float32)
    truth = x.astype(np.float64) @ x.T.astype(np.float64)
    xt = torch.from_numpy(x)
    xb = xt.bfloat16()
    screen = (xb @ xb.T).double().numpy()
    base, rel = screened_module.screen_error_bound(xt, xb)
    bound = base.double().numpy()[:, None] + rel * np.abs(screen)
    err = np.abs(screen - truth)
    assert (err <= bound).all()
    # and it is not vacuous: the screen does err by a good part of it
    assert (err / bound).max() > 0.2


def test_screened_knn_equals_exact_search():
    feats, _ = planted(num_clusters=30, size=40, dim=64, spread=0.8, seed=2)
    exact_ids, exact_sims = knn_search(
        feats, 30, method='exact', backend='torch')
    ids, sims = knn_search(feats, 30, method='screened', backend='torch')
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_allclose(sims, exact_sims, atol=1e-6)


def test_screened_knn_in_uneven_chunks(monkeypatch):
    # Screen blocks of 7 rows and re-scoring steps of 3 rows (the torch
    # re-scoring, without faiss): neither divides N = 100, so every last
    # chunk is short.
    feats, _ = planted(num_clusters=10, size=9, dim=16, spread=0.8, seed=4)
    monkeypatch.setattr(screened_module, 'faiss', None)
    ids, sims, _ = screened_module.screened_search(
        feats,
        5,
        knn_module._exact_queries,
        extra=7,
        block_bytes=7 * 2 * len(feats),
        gather_bytes=3 * 4 * 12 * 16)
    got, _ = knn_module.canonical_neighbours(feats, ids, sims, 5)
    want, _ = knn_search(feats, 5, method='exact', backend='torch')
    np.testing.assert_array_equal(got, want)


def test_rescore_without_faiss_matches(monkeypatch):
    feats, _ = planted(num_clusters=5, size=8, dim=16, seed=5)
    ids = np.random.default_rng(0).integers(0, len(feats), (len(feats), 6))
    want = np.einsum('nd,nmd->nm', feats.astype(np.float64), feats[ids])
    np.testing.assert_allclose(
        screened_module.rescore(feats, ids), want, atol=1e-6)
    monkeypatch.setattr(screened_module, 'faiss', None)
    np.testing.assert_allclose(
        screened_module.rescore(feats, ids, gather_bytes=3 * 4 * 6 * 16),
        want,
        atol=1e-6)


def test_screened_knn_falls_back_where_it_cannot_certify():
    # Duplicates and quantised values: many rows tie across the screen's
    # resolution, so they must be searched again in float32 and still come
    # out canonical and exact.
    feats = with_ties_and_duplicates()
    redone = []

    def fallback(x, rows, k):
        redone.append(rows)
        return knn_module._exact_torch(x, k, rows)

    ids, sims, num_redone = screened_module.screened_search(
        feats, 10, fallback, extra=2)
    assert num_redone > 0 and len(np.concatenate(redone)) == num_redone
    got, got_sims = knn_module.canonical_neighbours(feats, ids, sims, 10)
    want, want_sims = knn_search(feats, 10, method='exact', backend='torch')
    np.testing.assert_allclose(got_sims, want_sims, atol=1e-6)
    # equal similarities may be ordered differently by the two float32
    # kernels, but every row has the same similarity profile and self first
    np.testing.assert_array_equal(got[:, 0], np.arange(len(feats)))
    # all points identical: nothing can be certified, all rows redone
    same = unit(np.ones((40, 8)))
    ids, sims, num_redone = screened_module.screened_search(
        same, 5, knn_module._exact_queries, extra=3)
    assert num_redone == 40
    got, _ = knn_module.canonical_neighbours(same, ids, sims, 5)
    np.testing.assert_array_equal(got[7], [7, 0, 1, 2, 3])


def test_auto_knn_method_screens_only_large_cpu_sets(monkeypatch):
    small = np.zeros((100, 4), np.float32)
    large = np.zeros((knn_module._SCREEN_MIN_POINTS, 4), np.float32)
    monkeypatch.setattr(knn_module, 'cpu_has_native_bf16', lambda: True)
    assert knn_module.resolve_knn_method('auto', small) == 'exact'
    assert knn_module.resolve_knn_method('auto', large) == 'screened'
    assert knn_module.resolve_knn_method('ivf', large) == 'ivf'
    monkeypatch.setattr(knn_module, '_faiss_gpu_count', lambda: 1)
    assert knn_module.resolve_knn_method('auto', large) == 'exact'
    assert knn_module.resolve_knn_method(
        'auto', large, backend='torch') == 'screened'
    monkeypatch.setattr(knn_module, 'cpu_has_native_bf16', lambda: False)
    assert knn_module.resolve_knn_method(
        'auto', large, backend='torch') == 'exact'


# ----------------------------------------------------------------- Jaccard


def straightforward_jaccard(feats, k1, k2):
    """The algorithm read off the notes, with sets and float64 sums."""
    feats = np.asarray(feats, dtype=np.float64)
    n = len(feats)
    rank, _ = knn_search(feats.astype(np.float32), min(k1, n))
    half = int(round(k1 / 2)) + 1

    def reciprocal(i, width):
        return {int(j) for j in rank[i, :width] if i in set(rank[j, :width])}

    full = [reciprocal(i, k1) for i in range(n)]
    halves = [reciprocal(i, half) for i in range(n)]
    v = np.zeros((n, n))
    for i in range(n):
        grown = set(full[i])
        for c in full[i]:
            if len(halves[c] & full[i]) > 2 / 3 * len(halves[c]):
                grown |= halves[c]
        cols = sorted(grown)
        d = 2 - 2 * feats[cols] @ feats[i]
        w = np.exp(-d - (-d).max())
        v[i, cols] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    out = np.ones((n, n))
    for i in range(n):
        for j in range(n):
            s = np.minimum(v[i], v[j]).sum()
            out[i, j] = max(0.0, 1 - s / (2 - s))
    return out


@pytest.mark.parametrize('k1,k2', [(8, 3), (6, 1), (5, 4)])
def test_naive_baseline_matches_straightforward_transcription(k1, k2):
    feats = with_ties_and_duplicates(n=48, dim=8, seed=2)
    expected = straightforward_jaccard(feats, k1, k2)
    dense = naive_jaccard_distance(feats, k1=k1, k2=k2)
    assert dense.dtype == np.float32 and dense.shape == expected.shape
    np.testing.assert_allclose(dense, expected, atol=2e-6)
    np.testing.assert_array_equal(dense == 1, expected == 1)


@pytest.mark.parametrize('seed', [0, 1])
def test_sparse_equals_naive_with_ties_and_duplicates(seed):
    feats = with_ties_and_duplicates(seed=seed)
    n = len(feats)
    dense = naive_jaccard_distance(feats, k1=12, k2=4)
    sparse = jaccard_distance(feats, k1=12, k2=4)
    assert sp.issparse(sparse) and sparse.format == 'csr'
    assert sparse.dtype == np.float32 and sparse.shape == (n, n)
    assert sparse.has_sorted_indices
    # pairs not stored are exactly 1 in the naive dense baseline
    stored = sparse_to_dense(sparse, missing=np.nan)
    assert (dense[np.isnan(stored)] == 1).all()
    np.testing.assert_allclose(
        sparse_to_dense(sparse), dense, atol=1e-6, rtol=0)
    # ... and in fact equal bit for bit, both symmetric
    np.testing.assert_array_equal(sparse_to_dense(sparse), dense)
    np.testing.assert_array_equal(dense, dense.T)
    # the diagonal is always stored, zeros explicitly
    assert (sparse.diagonal() <= 1e-6).all()
    coo = sparse.tocoo()
    assert (coo.row == coo.col).sum() == n
    assert ((coo.data == 0) & (coo.row == coo.col)).any()
    # exact duplicates share their neighbourhoods
    assert sparse[0, 1] < 0.6 and sparse[0, 4] < 0.6


def test_jaccard_accepts_tensors_and_sparse_chunking_is_invisible():
    feats, _ = planted(dim=16, spread=0.6, seed=4)
    ref = jaccard_distance(torch.from_numpy(feats), k1=10, k2=3)
    rank, _ = knn_search(feats, 10)
    e_ptr, e_idx = k_reciprocal.expanded_sets(rank, 10, chunk_rows=7)
    vals = k_reciprocal.expansion_weights(
        torch.from_numpy(feats), e_ptr, e_idx, gather_bytes=1)
    q = k_reciprocal.query_expansion(e_ptr, e_idx, vals, rank, 3, chunk_rows=5)
    tiny_chunks = k_reciprocal.min_sum_distance(*q, acc_bytes=1)
    np.testing.assert_array_equal(tiny_chunks.toarray(), ref.toarray())
    np.testing.assert_array_equal(tiny_chunks.indices, ref.indices)
    # rows of d_J for a subset of points: the same rows of the full matrix
    rows = np.array([17, 3, 40, 3])
    subset = k_reciprocal.min_sum_distance(*q, acc_bytes=1, rows=rows)
    assert subset.shape == (4, len(feats))
    np.testing.assert_array_equal(subset.toarray(), ref[rows].toarray())
    np.testing.assert_array_equal(subset.indptr, ref[rows].indptr)
    # the terms of a chunk added in small groups: the same order, the same
    # values bit for bit
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(k_reciprocal, '_TERMS_PER_STEP', 7)
        grouped = k_reciprocal.min_sum_distance(*q)
    np.testing.assert_array_equal(grouped.toarray(), ref.toarray())
    # threads share the chunks, each with its own accumulator: the same
    # matrix whatever their number, with and without the eps cut
    for threads in (2, 3):
        threaded = k_reciprocal.min_sum_distance(
            *q, acc_bytes=4 * len(feats) * 5, threads=threads)
        np.testing.assert_array_equal(threaded.toarray(), ref.toarray())
        np.testing.assert_array_equal(threaded.indptr, ref.indptr)
        cut = k_reciprocal.min_sum_distance(
            *q, acc_bytes=1, threads=threads, max_distance=0.6, rows=rows)
        near = k_reciprocal.min_sum_distance(
            *q, threads=1, max_distance=0.6, rows=rows)
        np.testing.assert_array_equal(cut.toarray(), near.toarray())
        np.testing.assert_array_equal(cut.indptr, near.indptr)


def test_k_reciprocal_widths_follow_self_among_k1():
    # R(i) from k1 entries when the point counts among its k1 nearest, from
    # k1 + 1 when it comes on top; Rh from round(k1 / 2) + 1 either way,
    # 7 entries for both k1 = 11 and k1 = 12.
    feats, _ = planted(dim=16, spread=0.6, seed=4)
    rank, _ = knn_search(feats, 13)
    among = k_reciprocal.expanded_sets(rank, 11)
    cut = k_reciprocal.expanded_sets(rank[:, :11], 11)
    on_top = k_reciprocal.expanded_sets(rank, 11, self_among_k1=False)
    wider = k_reciprocal.expanded_sets(rank, 12)
    for a, b in [(among, cut), (on_top, wider)]:
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert on_top[1].size > among[1].size


def test_dbscan_labels_equal_between_naive_and_sparse():
    feats = with_ties_and_duplicates(n=200, dim=16, seed=5)
    labels = {
        name: dbscan_labels(distance, eps=0.6, min_samples=4)
        for name, distance in [('naive',
                                naive_jaccard_distance(feats, k1=12, k2=4)),
                               ('sparse',
                                jaccard_distance(feats, k1=12, k2=4))]
    }
    np.testing.assert_array_equal(labels['naive'], labels['sparse'])
    assert labels['sparse'].max() >= 2  # several clusters, not all noise


# -------------------------------------------------------------- clustering


def assert_valid(labels, n):
    assert labels.dtype == np.int64 and labels.shape == (n, )
    assert labels.min() >= -1
    ids = np.unique(labels[labels >= 0])
    np.testing.assert_array_equal(ids, np.arange(ids.size))


def test_dbscan_sparse_stored_zeros_are_neighbours():
    # four points at stored distance 0 form a cluster; the same pattern
    # without stored entries is all noise
    n = 6
    rows, cols = np.meshgrid(np.arange(4), np.arange(4), indexing='ij')
    zeros = sp.csr_matrix(
        (np.zeros(16, np.float32), (rows.ravel(), cols.ravel())), shape=(n, n))
    assert zeros.nnz == 16
    graph = neighbour_graph(zeros, eps=0.6)
    assert graph.nnz == 16
    labels = dbscan_labels(zeros, eps=0.6, min_samples=4)
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, -1, -1])
    empty = sp.csr_matrix((n, n), dtype=np.float32)
    np.testing.assert_array_equal(
        dbscan_labels(empty, min_samples=4), np.full(n, -1))
    # dense input gives the same answer as the sparse one
    dense = np.ones((n, n), np.float32)
    dense[:4, :4] = 0
    np.testing.assert_array_equal(dbscan_labels(dense), labels)


def test_dbscan_on_planted_clusters():
    feats, truth = planted(seed=6)
    labels = cluster_features(feats, dict(type='dbscan', k1=10, k2=3))
    assert_valid(labels, len(feats))
    inlier = truth >= 0
    assert adjusted_rand_score(truth[inlier],
                               labels[inlier]) == pytest.approx(1.0)
    assert labels.max() == truth.max()
    # Jaccard is rank-based: an isolated point may still join the cluster it
    # is a reciprocal neighbour of, so outliers are not checked here


def test_infomap_finds_planted_clusters():
    feats, truth = planted(seed=7)
    labels = infomap_labels(feats, k1=10, k2=4, min_sim=0.5)
    assert_valid(labels, len(feats))
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    assert (labels[truth < 0] == -1).all()
    again = cluster_features(
        torch.from_numpy(feats),
        dict(type='infomap', k1=10, k2=4, min_sim=0.5))
    np.testing.assert_array_equal(again, labels)


def test_infomap_small_communities_are_noise():
    feats, truth = planted(num_clusters=3, size=4, seed=8)
    labels = infomap_labels(feats, k1=10, k2=4, min_sim=0.5)
    np.testing.assert_array_equal(labels, np.full(len(feats), -1))
    labels = infomap_labels(feats, k1=10, k2=3, min_sim=0.5)
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)


def test_hdbscan_on_sparse_jaccard_dense_and_features():
    feats, truth = planted(num_clusters=5, size=16, seed=9)
    labels = cluster_features(
        feats, dict(type='hdbscan', k1=12, k2=3, min_cluster_size=4))
    assert_valid(labels, len(feats))
    assert adjusted_rand_score(truth, labels) > 0.9
    dense = naive_jaccard_distance(feats, k1=12, k2=3)
    assert adjusted_rand_score(truth, hdbscan_labels(dense)) > 0.9
    on_feats = hdbscan_labels(feats, min_cluster_size=5, metric='euclidean')
    assert_valid(on_feats, len(feats))
    assert adjusted_rand_score(truth, on_feats) > 0.9


# --------------------------------------------------------- degenerate input

CONFIGS = [
    dict(type='dbscan', eps=0.6, min_samples=4, k1=30, k2=6),
    dict(type='dbscan', k1=30, k2=6, naive=True),
    dict(type='infomap', k1=15, k2=4, min_sim=0.5),
    dict(type='hdbscan', k1=30, k2=6, min_cluster_size=4),
]


def config_id(cfg):
    return cfg['type'] + ('-naive' if cfg.get('naive') else '')


def cluster(features, cfg):
    """cluster_features; with ``naive=True``, DBSCAN on the naive baseline's
    dense Jaccard distance."""
    cfg = dict(cfg)
    if not cfg.pop('naive', False):
        return cluster_features(features, cfg)
    distance = naive_jaccard_distance(features, cfg.pop('k1'), cfg.pop('k2'))
    cfg.pop('type')
    return dbscan_labels(distance, **cfg)


@pytest.mark.parametrize('cfg', CONFIGS, ids=config_id)
def test_single_point(cfg):
    labels = cluster(unit(np.ones((1, 8))), cfg)
    np.testing.assert_array_equal(labels, [-1])


@pytest.mark.parametrize('cfg', CONFIGS, ids=config_id)
def test_fewer_points_than_k1(cfg):
    feats, truth = planted(num_clusters=2, size=8, outliers=0, seed=10)
    labels = cluster(feats, cfg)  # N = 16 < k1
    assert_valid(labels, 16)
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)


def test_fewer_points_than_k1_naive_and_sparse_agree():
    feats, _ = planted(num_clusters=2, size=5, outliers=1, seed=11)
    dense = naive_jaccard_distance(feats, k1=30, k2=6)
    sparse = jaccard_distance(feats, k1=30, k2=6)
    np.testing.assert_array_equal(sparse_to_dense(sparse), dense)


@pytest.mark.parametrize('cfg', CONFIGS, ids=config_id)
def test_all_points_identical(cfg):
    feats = unit(np.tile(np.arange(1, 9), (20, 1)))
    labels = cluster(feats, cfg)
    assert_valid(labels, 20)
    if cfg['type'] != 'hdbscan':  # HDBSCAN never returns the root cluster
        np.testing.assert_array_equal(labels, np.zeros(20))
    dist = jaccard_distance(feats, k1=30, k2=6)
    assert dist.nnz == 400 and np.abs(dist.data).max() < 1e-6


@pytest.mark.parametrize('cfg', CONFIGS, ids=config_id)
def test_single_cluster(cfg):
    feats, _ = planted(num_clusters=1, size=25, outliers=0, seed=12)
    labels = cluster(feats, cfg)
    assert_valid(labels, 25)
    assert labels.max() <= 0 if cfg['type'] == 'hdbscan' else \
        (labels == 0).all()


@pytest.mark.parametrize('cfg', CONFIGS, ids=config_id)
def test_all_noise(cfg):
    feats = unit(np.eye(12, 64))  # orthogonal points
    if cfg['type'] == 'dbscan':
        # Jaccard is rank-based: with N < k1 every point is a reciprocal
        # neighbour of every other, so only min_samples can leave all noise
        cfg = dict(cfg, min_samples=13)
    labels = cluster(feats, cfg)
    np.testing.assert_array_equal(labels, np.full(12, -1))


@pytest.mark.parametrize('sparse', [False, True])
def test_dbscan_all_far_is_all_noise(sparse):
    dist = np.ones((10, 10), np.float32)
    np.fill_diagonal(dist, 0)
    if sparse:  # only the diagonal, stored as explicit zeros
        dist = sp.csr_matrix(
            (np.zeros(10, np.float32), (np.arange(10), np.arange(10))),
            shape=(10, 10))
        assert dist.nnz == 10
    np.testing.assert_array_equal(
        dbscan_labels(dist, eps=0.6, min_samples=2), np.full(10, -1))


def test_compact_labels_and_config_errors():
    np.testing.assert_array_equal(
        compact_labels(np.array([7, -1, 3, 7, 9, -5])), [0, -1, 1, 0, 2, -1])
    with pytest.raises(ValueError):
        cluster_features(unit(np.eye(3)), dict(type='kmeans'))
    with pytest.raises(TypeError):  # the dense mode is the naive baseline
        jaccard_distance(unit(np.eye(3)), mode='dense')
    with pytest.raises(ValueError):
        k_reciprocal.expansion_weights(
            unit(np.eye(3)), np.arange(4), np.arange(3), metric='banded')


def test_jaccard_max_distance_keeps_exactly_the_near_pairs():
    """Dropping the pairs farther than eps while computing d_J stores the
    near pairs with the same values, keeps the diagonal, and gives DBSCAN
    the same labels."""
    feats, _ = planted(num_clusters=12, size=15, dim=24, spread=0.9, seed=5)
    full = jaccard_distance(feats, k1=20, k2=6)
    cut = jaccard_distance(feats, k1=20, k2=6, max_distance=0.6)
    assert cut.nnz < full.nnz
    np.testing.assert_array_equal(cut.diagonal(), full.diagonal())
    f, c = full.tocoo(), cut.tocoo()
    keep = (f.data <= 0.6) | (f.row == f.col)
    expected = sorted(zip(f.row[keep], f.col[keep], f.data[keep]))
    assert sorted(zip(c.row, c.col, c.data)) == expected
    np.testing.assert_array_equal(
        dbscan_labels(full, eps=0.6), dbscan_labels(cut, eps=0.6))
