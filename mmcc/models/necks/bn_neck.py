from typing import Tuple, Union

import torch
from mmengine.model import BaseModule
from torch import nn

from mmcc.registry import MODELS


@MODELS.register_module()
class BNNeck(BaseModule):
    """Global pooling followed by a BatchNorm1d whose bias is frozen.

    The re-ID "BNNeck": the BN layer starts as weight 1, bias 0 and only its
    weight is trained (the bias stays 0, as in the paper's reference).

    Args:
        in_channels (int): Channels of the backbone's last feature map (C).
        pooling (dict): Config of a pooling module mapping (B, C, H, W) to
            (B, C). mmpretrain ships ``GlobalAveragePooling`` (the baseline)
            and ``GeneralizedMeanPooling`` (GeM, the best published runs).
            Defaults to ``dict(type='mmpretrain.GlobalAveragePooling')``.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 pooling: dict = dict(type='mmpretrain.GlobalAveragePooling'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.pooling = MODELS.build(pooling)
        self.bn = nn.BatchNorm1d(in_channels)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)

    def forward(
            self, inputs: Union[torch.Tensor,
                                Tuple[torch.Tensor]]) -> torch.Tensor:
        """Pool the last feature map and batch-normalise it.

        Args:
            inputs (Tensor | tuple[Tensor]): (B, C, H, W), or a backbone's
                tuple of outputs, of which the last one is used.

        Returns:
            Tensor: (B, C) features, not L2-normalised.
        """
        if isinstance(inputs, (tuple, list)):
            inputs = inputs[-1]
        pooled = self.pooling(inputs)
        if isinstance(pooled, (tuple, list)):
            pooled = pooled[-1]
        return self.bn(pooled.flatten(1))
