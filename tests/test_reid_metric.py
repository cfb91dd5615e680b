import math

import numpy as np
import pytest
import torch
from mmpretrain.structures import DataSample

from mmcc.evaluation import ReIDMetric
from mmcc.evaluation.functional import rank_metrics
from mmcc.registry import METRICS


def _angle(degrees, scale=1.):
    """A 2-D embedding at an angle: once L2-normalised, distances grow with
    the angle difference. ``scale`` != 1 leaves it for the metric to
    normalise."""
    rad = math.radians(degrees)
    return scale * torch.tensor([math.cos(rad), math.sin(rad)])


def _sample(feat, label, camid, is_query, label_as_tensor=True):
    """A model output as mmengine hands it to metrics (``to_dict()``)."""
    sample = DataSample()
    if label_as_tensor:
        sample.set_gt_label(label)  # a tensor of shape (1, )
    else:
        sample.set_field(label, 'gt_label', field_type='metainfo')
    sample.set_metainfo(dict(camid=camid, is_query=is_query))
    sample.set_field(feat, 'pred_feat')
    return sample.to_dict()


def _hand_case():
    # Query 1 (id 1, cam 0) at 0 degrees. Gallery by angle: g_a 0 (id 1,
    # cam 0: same camera, ignored), g_d 1 (junk, ignored), g_b 10 (id 2),
    # g_c 20 (id 1), g_e 30 (distractor 0), g_f 40 (id 1). Valid ranking
    # g_b -, g_c +, g_e -, g_f +: AP = (1/2 + 2/4) / 2 = 1/2, INP = 2/4,
    # first hit at 2.
    # Query 2 (id 2, cam 0) at 10.5 degrees: g_b (id 2, cam 1) is nearest:
    # AP = INP = 1, first hit at 1.
    # Means: mAP = mINP = 3/4, top1 = 1/2, top5 = top10 = 1.
    queries = [
        _sample(_angle(0), 1, 0, True),
        _sample(_angle(10.5, scale=3.), 2, 0, True, label_as_tensor=False),
    ]
    gallery = [
        _sample(_angle(0), 1, 0, False),
        _sample(_angle(10, scale=.5), 2, 1, False),
        _sample(_angle(20), 1, 1, False),
        _sample(_angle(1), -1, 1, False),
        _sample(_angle(30), 0, 1, False),
        _sample(_angle(40), 1, 2, False),
    ]
    return queries, gallery


def test_build_from_registry_and_evaluate():
    metric = METRICS.build(dict(type='ReIDMetric'))
    assert isinstance(metric, ReIDMetric)
    queries, gallery = _hand_case()
    # Queries and gallery may come in any order and batches.
    metric.process(None, [gallery[0], queries[1], gallery[1]])
    metric.process(None, gallery[2:] + queries[:1])
    results = metric.evaluate(size=8)
    expected = {
        'reid/mAP': 75.,
        'reid/mINP': 75.,
        'reid/top1': 50.,
        'reid/top5': 100.,
        'reid/top10': 100.
    }
    assert results.keys() == expected.keys()
    for key, value in expected.items():
        assert results[key] == pytest.approx(value), key
    assert metric.results == []


def test_topk_and_prefix():
    metric = ReIDMetric(topk=(1, 2), prefix='market')
    queries, gallery = _hand_case()
    metric.process(None, queries + gallery)
    results = metric.evaluate(size=8)
    assert results['market/top1'] == pytest.approx(50.)
    assert results['market/top2'] == pytest.approx(100.)
    assert 'market/top5' not in results


def test_matches_rank_metrics_on_random_data():
    rng = np.random.default_rng(0)
    feats = torch.nn.functional.normalize(torch.randn(60, 8), dim=1)
    labels = rng.integers(0, 6, 60)
    camids = rng.integers(0, 3, 60)
    is_query = np.arange(60) < 15
    metric = ReIDMetric()
    metric.process(None, [
        dict(
            pred_feat=f,
            gt_label=torch.tensor([int(lb)]),
            camid=int(c),
            is_query=bool(q))
        for f, lb, c, q in zip(feats, labels, camids, is_query)
    ])
    results = metric.compute_metrics(metric.results)
    distmat = torch.cdist(feats[:15], feats[15:])
    expected = rank_metrics(distmat, labels[:15], labels[15:], camids[:15],
                            camids[15:])
    assert results == pytest.approx({k: 100 * v for k, v in expected.items()})


def _rerank_case():
    """The hard-negative layout of test_rank_metrics, as data samples."""
    cluster_1 = [(0, 0), (.02, 0), (0, .02), (-.02, 0), (0, -.02)]
    cluster_2 = [(.2, 0), (.22, 0), (.2, .02), (.2, -.02), (.24, 0),
                 (.22, .02), (.22, -.02)]
    points = torch.tensor([(.10, 0)] + cluster_1 + [(.17, 0)] + cluster_2)
    feats = torch.nn.functional.normalize(
        torch.cat([points, torch.ones(len(points), 1)], 1), dim=1)
    labels = [1] + [1] * 5 + [2] * 8
    return [
        dict(pred_feat=f, gt_label=lb, camid=int(i > 0), is_query=i == 0)
        for i, (f, lb) in enumerate(zip(feats, labels))
    ]


def test_rerank_improves_constructed_case():
    samples = _rerank_case()
    plain = ReIDMetric()
    plain.process(None, samples)
    before = plain.evaluate(size=len(samples))
    reranked = ReIDMetric(rerank=True, k1=6, k2=3)
    reranked.process(None, samples)
    after = reranked.evaluate(size=len(samples))
    assert after.keys() == before.keys()
    assert all(0 <= v <= 100 for v in after.values())
    assert before['reid/top1'] == 0. and after['reid/top1'] == 100.
    assert after['reid/mAP'] > before['reid/mAP']


def test_rerank_default_parameters_run():
    queries, gallery = _hand_case()
    metric = ReIDMetric(rerank=True)
    metric.process(None, queries + gallery)
    results = metric.evaluate(size=8)
    assert len(results) == 5
    assert all(0 <= v <= 100 and math.isfinite(v) for v in results.values())
