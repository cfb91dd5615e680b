"""ClusterNCE: cross-entropy of query-to-cluster logits with pseudo-labels."""
import torch.nn.functional as F
from torch import Tensor, nn

from mmcc.registry import MODELS


@MODELS.register_module()
class ClusterNCELoss(nn.Module):
    """Cross-entropy over the cluster logits, averaged over labelled queries.

    The temperature is applied by the caller (``ClusterMemoryHead``), which
    owns the memory the logits come from. Queries labelled ``-1`` (DBSCAN
    outliers, should any reach a batch) contribute nothing; a batch with no
    labelled query gives a zero loss rather than NaN.

    Args:
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """
        Args:
            logits (Tensor): (B, K) similarities already divided by the
                temperature.
            labels (Tensor): (B,) int64 pseudo-labels in ``[0, K)`` or -1.

        Returns:
            Tensor: scalar loss.
        """
        summed = F.cross_entropy(
            logits, labels, ignore_index=-1, reduction='sum')
        # Divide by a count kept on device: no host synchronisation.
        num_labelled = (labels >= 0).sum().clamp_(min=1)
        return self.loss_weight * summed / num_labelled

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}'
