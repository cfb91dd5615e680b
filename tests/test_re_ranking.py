"""re_ranking against a naive transcription of the authors' released code."""
import numpy as np
import pytest
import torch

from mmcc.evaluation.functional import re_ranking


def released_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value):
    """Zhong et al.'s re-ranking step by step, as the authors released it.

    Dense float32 matrices and per-point loops over all Q + G points; the
    rank lists are full argsorts of the pooled distance.
    """
    num_query = len(q_g_dist)
    original = np.concatenate([
        np.concatenate([q_q_dist, q_g_dist], axis=1),
        np.concatenate([q_g_dist.T, g_g_dist], axis=1)
    ])
    original = np.square(original).astype(np.float32)
    # every column divided by its maximum, then transposed
    original = (original / original.max(axis=0)).T
    num_all = len(original)
    initial_rank = np.argsort(original, axis=1)

    def k_reciprocal(i, k):
        """i's k + 1 nearest (itself included) that have i among theirs."""
        forward = initial_rank[i, :k + 1]
        backward = initial_rank[forward, :k + 1]
        return forward[np.nonzero(backward == i)[0]]

    half = int(np.around(k1 / 2))
    v = np.zeros_like(original)
    for i in range(num_all):
        reciprocal = k_reciprocal(i, k1)
        expansion = reciprocal
        for candidate in reciprocal:
            candidate_set = k_reciprocal(candidate, half)
            overlap = np.intersect1d(candidate_set, reciprocal)
            if len(overlap) > 2 / 3 * len(candidate_set):
                expansion = np.append(expansion, candidate_set)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        v[i, expansion] = weight / np.sum(weight)

    if k2 != 1:
        v = np.stack(
            [np.mean(v[initial_rank[i, :k2]], axis=0) for i in range(num_all)])

    holders = [np.nonzero(v[:, c])[0] for c in range(num_all)]
    jaccard = np.zeros((num_query, num_all), dtype=np.float32)
    for i in range(num_query):
        shared = np.zeros(num_all, dtype=np.float32)
        for c in np.nonzero(v[i])[0]:
            shared[holders[c]] += np.minimum(v[i, c], v[holders[c], c])
        jaccard[i] = 1 - shared / (2 - shared)
    final = (
        jaccard * (1 - lambda_value) + original[:num_query] * lambda_value)
    return final[:, num_query:]


@pytest.mark.parametrize('k1,k2,lambda_value', [(20, 6, 0.3), (6, 3, 0.3),
                                                (8, 1, 0.5), (4, 12, 0.1)])
def test_re_ranking_matches_released_algorithm(k1, k2, lambda_value):
    rng = np.random.default_rng(k1 * 100 + k2)
    num_query, num_gallery, dim = 12, 30, 16
    centres = rng.standard_normal((6, dim))
    points = centres[rng.integers(0, 6, num_query + num_gallery)]
    points += 0.6 * rng.standard_normal(points.shape)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    points = points.astype(np.float32)
    dist = np.clip(2 - 2 * points @ points.T, 0, None)
    np.fill_diagonal(dist, 0)
    q_g = dist[:num_query, num_query:]
    q_q = dist[:num_query, :num_query]
    g_g = dist[num_query:, num_query:]

    result = re_ranking(torch.from_numpy(q_g), q_q, g_g, k1, k2, lambda_value)
    expected = released_re_ranking(q_g, q_q, g_g, k1, k2, lambda_value)
    assert result.shape == (num_query, num_gallery)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)
