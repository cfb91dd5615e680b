import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

import mmcc.evaluation.functional.rank as rank_module
from mmcc.evaluation.functional import rank_metrics, re_ranking

# A hand-made gallery of 8 entries: (identity, camera).
GALLERY_IDS = np.array([1, 2, 1, -1, 0, 1, 3, 1])
GALLERY_CAMS = np.array([0, 1, 1, 2, 1, 2, 0, 3])
QUERY_IDS = np.array([1, 2, 3, 1])
QUERY_CAMS = np.array([0, 1, 1, 2])
DISTMAT = np.array([
    # Query A (id 1, cam 0). g0 is the same id and camera and g3 junk, both
    # ignored although closest. Valid ranking: g1 -, g2 +, g4 - (distractor,
    # kept), g5 +, g6 -, g7 +: positives at ranks 2, 4, 6.
    # AP = (1/2 + 2/4 + 3/6) / 3 = 1/2; INP = 3/6 = 1/2; first hit at 2.
    [0.1, 0.2, 0.3, 0.05, 0.4, 0.5, 0.6, 0.9],
    # Query B (id 2, cam 1): its only gallery image g1 has the same camera:
    # no valid match, the query is skipped.
    [0.5, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8],
    # Query C (id 3, cam 1): only positive g6 (cam 0), tied at 0.2 with the
    # negatives g1 and g2; g3 is junk. Ties count against the query: the
    # positive's rank is the number of valid entries <= 0.2, i.e. 3.
    # AP = 1/3; INP = 1/3; first hit at 3.
    [0.5, 0.2, 0.2, 0.0, 0.9, 0.7, 0.2, 0.8],
    # Query D (id 1, cam 2): g5 (same camera) ignored, g3 junk; positives
    # g0, g2 (tied at 0.3 with the negative g1) and g7 (tied at 0.6 with g6).
    # Valid ranking by distance: g4 - (0.1); {g0 +, g1 -, g2 +} (0.3);
    # {g6 -, g7 +} (0.6). Ranks: g0, g2 -> 4 entries <= 0.3; g7 -> 6.
    # AP = (2/4 + 2/4 + 3/6) / 3 = 1/2 (sklearn: recall 2/3 at precision
    # 2/4, then 1 at 3/6); INP = 3/6 = 1/2; first hit at 4.
    [0.3, 0.3, 0.3, 0.1, 0.1, 0.0, 0.6, 0.6],
])


def _sklearn_loop(distmat, query_ids, gallery_ids, query_cams, gallery_cams,
                  topk):
    """Per-query reference: sklearn's AP on the valid entries of each row."""
    aps, inps, hits = [], [], np.zeros(len(topk))
    for i in range(len(distmat)):
        valid = (gallery_ids != -1) & ~((gallery_ids == query_ids[i]) &
                                        (gallery_cams == query_cams[i]))
        dist = distmat[i][valid]
        positive = gallery_ids[valid] == query_ids[i]
        if not positive.any():
            continue
        aps.append(average_precision_score(positive, -dist))
        # Rank of a positive: valid entries at a distance <= its own.
        ranks = (dist[None] <= dist[positive][:, None]).sum(1)
        inps.append(positive.sum() / ranks.max())
        hits += ranks.min() <= np.asarray(topk)
    results = dict(mAP=np.mean(aps), mINP=np.mean(inps))
    results.update({f'top{k}': h / len(aps) for k, h in zip(topk, hits)})
    return results


def test_hand_computed_market_protocol():
    results = rank_metrics(
        DISTMAT,
        QUERY_IDS,
        GALLERY_IDS,
        QUERY_CAMS,
        GALLERY_CAMS,
        topk=(1, 2, 3, 5))
    # Valid queries A, C, D (B skipped): AP and INP 1/2, 1/3, 1/2; first
    # hits at ranks 2, 3, 4.
    expected = dict(
        mAP=(1 / 2 + 1 / 3 + 1 / 2) / 3,
        mINP=(1 / 2 + 1 / 3 + 1 / 2) / 3,
        top1=0.,
        top2=1 / 3,
        top3=2 / 3,
        top5=1.)
    assert list(results) == list(expected)
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, abs=1e-12), key
        assert isinstance(results[key], float)


def test_each_exclusion_matters():
    # Query A alone, without its same-camera and junk exclusions (give the
    # ignored entries other identities): g0 and g3 would rank first.
    ids = GALLERY_IDS.copy()
    ids[3] = 5  # g3 no longer junk: a negative at rank 1
    results = rank_metrics(DISTMAT[:1], QUERY_IDS[:1], ids, QUERY_CAMS[:1],
                           GALLERY_CAMS)
    # Valid ranking: g3 -, g1 -, g2 +, g4 -, g5 +, g6 -, g7 +.
    assert results['mAP'] == pytest.approx((1 / 3 + 2 / 5 + 3 / 7) / 3)
    cams = GALLERY_CAMS.copy()
    cams[0] = 1  # g0 now from another camera: a positive at rank 1
    results = rank_metrics(DISTMAT[:1], QUERY_IDS[:1], GALLERY_IDS,
                           QUERY_CAMS[:1], cams)
    # Valid ranking: g0 +, g1 -, g2 +, g4 -, g5 +, g6 -, g7 +.
    assert results['top1'] == 1.
    assert results['mAP'] == pytest.approx((1 + 2 / 3 + 3 / 5 + 4 / 7) / 4)
    # The distractor g4 (identity 0) is a negative: as identity -1 (junk)
    # query A's ranks become 2, 3, 5: AP = (1/2 + 2/3 + 3/5) / 3.
    ids = GALLERY_IDS.copy()
    ids[4] = -1
    results = rank_metrics(DISTMAT[:1], QUERY_IDS[:1], ids, QUERY_CAMS[:1],
                           GALLERY_CAMS)
    assert results['mAP'] == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)


def test_no_valid_query_gives_zeros_with_warning():
    with pytest.warns(UserWarning, match='no query has a valid positive'):
        results = rank_metrics(DISTMAT[1:2], QUERY_IDS[1:2], GALLERY_IDS,
                               QUERY_CAMS[1:2], GALLERY_CAMS)
    assert results == dict(mAP=0., mINP=0., top1=0., top5=0., top10=0.)
    with pytest.warns(UserWarning):
        results = rank_metrics(
            np.zeros((0, 3)), [], [1, 2, 3], [], [0, 0, 0], topk=(1, ))
    assert results == dict(mAP=0., mINP=0., top1=0.)


def test_infinite_distance_ranks_last():
    # Positive g1 at inf, tied with the negative g2: rank 3, AP = 1/3.
    results = rank_metrics([[0.5, np.inf, np.inf]], [1], [2, 1, 3], [0],
                           [1, 1, 1])
    assert results['mAP'] == pytest.approx(1 / 3)
    assert results['mINP'] == pytest.approx(1 / 3)
    assert results['top1'] == 0. and results['top5'] == 1.


def test_input_types_agree():
    args = (DISTMAT, QUERY_IDS, GALLERY_IDS, QUERY_CAMS, GALLERY_CAMS)
    expected = rank_metrics(*args)
    as_tensors = rank_metrics(*(torch.from_numpy(x) for x in args))
    as_float32 = rank_metrics(
        torch.from_numpy(DISTMAT).float(), *(x.tolist() for x in args[1:]))
    assert as_tensors == pytest.approx(expected)
    assert as_float32 == pytest.approx(expected)


@pytest.mark.parametrize('block_elements', [1 << 22, 50])
def test_agrees_with_sklearn_loop(block_elements, monkeypatch):
    # A tiny block size makes the blocked path run over many blocks.
    monkeypatch.setattr(rank_module, '_BLOCK_ELEMENTS', block_elements)
    rng = np.random.default_rng(0)
    topk = (1, 3, 5, 10)
    for trial in range(10):
        num_query, num_gallery = rng.integers(5, 30), rng.integers(20, 120)
        query_ids = rng.integers(0, 6, num_query)
        gallery_ids = rng.integers(-1, 6, num_gallery)
        query_cams = rng.integers(0, 3, num_query)
        gallery_cams = rng.integers(0, 3, num_gallery)
        # Few distinct values: plenty of ties.
        levels = rng.integers(3, 40)
        distmat = rng.integers(0, levels, (num_query, num_gallery)) / levels
        if trial % 2:
            distmat = distmat.astype(np.float32)
        results = rank_metrics(distmat, query_ids, gallery_ids, query_cams,
                               gallery_cams, topk)
        expected = _sklearn_loop(distmat, query_ids, gallery_ids, query_cams,
                                 gallery_cams, topk)
        assert results.keys() == expected.keys()
        for key in expected:
            assert abs(results[key] - expected[key]) <= 1e-12, (trial, key)


def _naive_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value):
    """Zhong et al.'s re-ranking written loop by loop, dense, for checking."""
    num_query = len(q_g_dist)
    dist = np.block([[q_q_dist, q_g_dist], [q_g_dist.T, g_g_dist]])**2
    dist = dist / dist.max(1, keepdims=True)
    order = np.argsort(dist, 1, kind='stable')

    def reciprocal(i, k):
        return {j for j in order[i, :k + 1] if i in order[j, :k + 1]}

    weights = np.zeros_like(dist)
    for i in range(len(dist)):
        near = reciprocal(i, k1)
        expanded = set(near)
        for j in near:
            near_j = reciprocal(j, int(np.around(k1 / 2)))
            if len(near_j & near) > 2 / 3 * len(near_j):
                expanded |= near_j
        cols = sorted(expanded)
        softmax = np.exp(-dist[i, cols])
        weights[i, cols] = softmax / softmax.sum()
    if k2 > 1:
        weights = np.stack(
            [weights[order[i, :k2]].mean(0) for i in range(len(dist))])
    shared = np.stack(
        [np.minimum(weights[i], weights).sum(1) for i in range(num_query)])
    jaccard = 1 - shared / (2 - shared)
    final = (1 - lambda_value) * jaccard + lambda_value * dist[:num_query]
    return final[:, num_query:]


def _squared_distances(x, y):
    return np.clip(2 - 2 * x @ y.T, 0, None)


@pytest.mark.parametrize('k1,k2', [(5, 3), (8, 1), (20, 6)])
def test_re_ranking_matches_naive(k1, k2):
    rng = np.random.default_rng(k1)
    centres = rng.standard_normal((5, 16))
    points = centres[rng.integers(0, 5, 50)] + 0.7 * rng.standard_normal(
        (50, 16))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    dist = _squared_distances(points, points)
    np.fill_diagonal(dist, 0)
    q_g, q_q, g_g = dist[:10, 10:], dist[:10, :10], dist[10:, 10:]

    result = re_ranking(torch.from_numpy(q_g), q_q, g_g, k1, k2, 0.3)
    assert result.shape == (10, 40) and result.dtype == np.float32
    expected = _naive_re_ranking(q_g, q_q, g_g, k1, k2, 0.3)
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_re_ranking_fixes_a_hard_negative():
    # 2-D layout, lifted onto the unit sphere. Query (identity 1) at
    # (0.10, 0); identity 1's gallery is a tight cluster at the origin;
    # the hard negative (identity 2) at (0.17, 0) is the query's nearest
    # but sits by its own identity's cluster around (0.21, 0), so it is not
    # a k-reciprocal neighbour of the query, while identity 1's images are.
    cluster_1 = [(0, 0), (.02, 0), (0, .02), (-.02, 0), (0, -.02)]
    cluster_2 = [(.2, 0), (.22, 0), (.2, .02), (.2, -.02), (.24, 0),
                 (.22, .02), (.22, -.02)]
    gallery = np.array(cluster_1 + [(.17, 0)] + cluster_2)
    query = np.array([(.10, 0)])

    def lift(xy):
        x = np.concatenate([xy, np.ones((len(xy), 1))], 1)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    query, gallery = lift(query), lift(gallery)
    gallery_ids = np.array([1] * 5 + [2] * 8)
    q_g = _squared_distances(query, gallery)
    assert q_g[0].argmin() == 5  # the hard negative comes first
    reranked = re_ranking(
        q_g,
        _squared_distances(query, query),
        _squared_distances(gallery, gallery),
        k1=6,
        k2=3)
    assert gallery_ids[reranked[0].argmin()] == 1
    ids_cams = ([1], gallery_ids, [0], np.ones(13))
    before = rank_metrics(q_g, *ids_cams)
    after = rank_metrics(reranked, *ids_cams)
    assert before['top1'] == 0. and after['top1'] == 1.
    assert after['mAP'] > before['mAP'] + 0.3
