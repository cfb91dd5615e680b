from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric

from mmcc.registry import METRICS
from mmcc.utils.checks import check_finite
from ..functional import rank_metrics, re_ranking


def _squared_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, M) squared Euclidean distances of (N, D) and (M, D) unit rows."""
    return (2 - 2 * x @ y.t()).clamp_(min=0)


def _as_int(value) -> int:
    """An int from an int, or a one-element tensor or array."""
    return int(torch.as_tensor(value).reshape(-1)[0])


@METRICS.register_module()
class ReIDMetric(BaseMetric):
    """Re-ID retrieval metric: CMC top-k, mAP and mINP, in percent.

    Every evaluated sample is either a query or a gallery image. Queries are
    ranked against the gallery by the Euclidean distance of their
    L2-normalised embeddings (squared, which ranks the same), optionally
    k-reciprocal re-ranked, and scored by
    :func:`mmcc.evaluation.functional.rank_metrics` with the Market-1501
    protocol (same identity and camera ignored, identity -1 is junk,
    identity 0 a distractor).

    Args:
        topk (Sequence[int]): The k of the CMC scores ``top{k}``.
            Defaults to (1, 5, 10).
        rerank (bool): Whether to apply k-reciprocal re-ranking
            (:func:`mmcc.evaluation.functional.re_ranking`) before scoring.
            Defaults to False.
        k1 (int): Re-ranking's k-reciprocal neighbourhood size.
            Defaults to 20.
        k2 (int): Re-ranking's query-expansion size. Defaults to 6.
        lambda_value (float): Re-ranking's weight of the original distance.
            Defaults to 0.3.
        collect_device (str): Device used to collect results across ranks,
            'cpu' or 'gpu'. Defaults to 'cpu'.
        prefix (str, optional): Prefix of the metric names; ``reid`` when
            None, giving e.g. ``reid/mAP``.

    Examples:
        >>> val_evaluator = dict(type='ReIDMetric', topk=(1, 5, 10))
        >>> test_evaluator = dict(type='ReIDMetric', rerank=True)
    """
    default_prefix: Optional[str] = 'reid'

    def __init__(self,
                 topk: Sequence[int] = (1, 5, 10),
                 rerank: bool = False,
                 k1: int = 20,
                 k2: int = 6,
                 lambda_value: float = 0.3,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        topk = (topk, ) if isinstance(topk, int) else tuple(topk)
        assert all(k > 0 for k in topk), '`topk` must be positive integers'
        self.topk = topk
        self.rerank = rerank
        self.k1 = k1
        self.k2 = k2
        self.lambda_value = lambda_value
        super().__init__(collect_device=collect_device, prefix=prefix)
        # Set by RankedListHook (`tools/test.py --show-dir`): also keep
        # each sample's img_path, and the last evaluation's distances,
        # identities, cameras and paths in `last_ranking` (main process),
        # to draw the ranked lists. The metrics are the same either way.
        self.keep_ranking = False
        self.last_ranking: Optional[dict] = None

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep the embedding, identity, camera and split of every sample.

        Args:
            data_batch: The batch from the data loader (unused).
            data_samples (Sequence[dict]): Model outputs as dicts, each with
                ``pred_feat`` (Tensor of shape (D, )), ``gt_label`` (int or
                one-element Tensor), ``camid`` (int) and ``is_query`` (bool).
        """
        for sample in data_samples:
            self.results.append(
                dict(
                    feat=sample['pred_feat'].detach().cpu(),
                    label=_as_int(sample['gt_label']),
                    camid=_as_int(sample['camid']),
                    is_query=bool(sample['is_query'])))
            if self.keep_ranking:
                self.results[-1]['img_path'] = sample.get('img_path')

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Rank the queries against the gallery and score the ranking.

        Args:
            results (list[dict]): What :meth:`process` kept, from all ranks.

        Returns:
            dict[str, float]: ``mAP``, ``mINP`` and ``top{k}`` in percent.

        Raises:
            ValueError: An embedding holds NaN or Inf (a diverged model),
                which would otherwise score as a perfect ranking.
        """
        feats = torch.stack([r['feat'] for r in results]).float()
        check_finite(feats, 'ReIDMetric: the collected pred_feat')
        feats = F.normalize(feats, dim=1)
        labels = torch.tensor([r['label'] for r in results])
        camids = torch.tensor([r['camid'] for r in results])
        is_query = torch.tensor([r['is_query'] for r in results])
        query, gallery = feats[is_query], feats[~is_query]

        distmat = _squared_euclidean(query, gallery)
        if self.rerank:
            distmat = re_ranking(
                distmat,
                _squared_euclidean(query, query),
                _squared_euclidean(gallery, gallery),
                k1=self.k1,
                k2=self.k2,
                lambda_value=self.lambda_value)
        if self.keep_ranking:
            paths = [(r.get('img_path'), r['is_query']) for r in results]
            self.last_ranking = dict(
                distmat=distmat,
                query_ids=labels[is_query],
                gallery_ids=labels[~is_query],
                query_cams=camids[is_query],
                gallery_cams=camids[~is_query],
                query_paths=[p for p, q in paths if q],
                gallery_paths=[p for p, q in paths if not q])
        metrics = rank_metrics(
            distmat,
            labels[is_query],
            labels[~is_query],
            camids[is_query],
            camids[~is_query],
            topk=self.topk)
        return {name: value * 100 for name, value in metrics.items()}
