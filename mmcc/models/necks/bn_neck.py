from typing import Optional, Sequence, Union

import torch
from mmengine.model import BaseModule
from torch import nn

from mmcc.registry import MODELS


@MODELS.register_module()
class BNNeck(BaseModule):
    """Global pooling followed by a BatchNorm1d whose bias is frozen.

    The re-ID "BNNeck": the BN layer starts as weight 1, bias 0 and only its
    weight is trained (the bias stays 0, as in the paper's reference).

    Backbones differ in what they return, and the neck takes each form:

    - (B, C, H, W) feature maps (CNNs): pooled by ``pooling``;
    - (B, C) vectors (ViT's class token, ConvNeXt's pooled output): used
      as they are;
    - a tuple or list of either (mmpretrain's ``out_indices``): its last
      item.

    Args:
        in_channels (int, optional): C, the channels of the backbone's last
            output. None lets :class:`ReIDModel` infer it from the backbone
            when the model is built. Defaults to None.
        pooling (dict, optional): Config of a pooling module mapping
            (B, C, H, W) to (B, C). mmpretrain ships ``GlobalAveragePooling``
            and ``GeneralizedMeanPooling`` (GeM, p = 3 trainable, which the
            reference's scripts use). None for a backbone that returns
            (B, C) vectors. Defaults to
            ``dict(type='mmpretrain.GlobalAveragePooling')``.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 in_channels: Optional[int] = None,
                 pooling: Optional[dict] = dict(
                     type='mmpretrain.GlobalAveragePooling'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if in_channels is None:
            raise ValueError(
                'BNNeck needs in_channels; inside a ReIDModel it is '
                'inferred from the backbone, elsewhere pass it')
        self.in_channels = in_channels
        self.pooling = MODELS.build(pooling) if pooling is not None else None
        self.bn = nn.BatchNorm1d(in_channels)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)

    @property
    def out_channels(self) -> int:
        """D, the dimension of the output features."""
        return self.in_channels

    def pool(
            self, inputs: Union[torch.Tensor,
                                Sequence[torch.Tensor]]) -> torch.Tensor:
        """Backbone outputs -> (B, C) pooled features (before the BN)."""
        if isinstance(inputs, (tuple, list)):
            inputs = inputs[-1]
        if inputs.dim() == 4:
            if self.pooling is None:
                raise ValueError(
                    'BNNeck was built without pooling but received (B, C, H,'
                    f' W) maps of shape {tuple(inputs.shape)}')
            inputs = self.pooling(inputs)
            if isinstance(inputs, (tuple, list)):
                inputs = inputs[-1]
            return inputs.flatten(1)
        if inputs.dim() == 2:
            return inputs
        raise ValueError(
            f'BNNeck takes (B, C, H, W) maps or (B, C) vectors, got shape '
            f'{tuple(inputs.shape)}; for a transformer, let the backbone '
            f"return its class token (e.g. out_type='cls_token')")

    def forward(
            self, inputs: Union[torch.Tensor,
                                Sequence[torch.Tensor]]) -> torch.Tensor:
        """Pool the backbone's last output and batch-normalise it.

        Args:
            inputs (Tensor | tuple[Tensor]): (B, C, H, W), (B, C), or a
                backbone's tuple of such outputs (the last one is used).

        Returns:
            Tensor: (B, C) features, not L2-normalised.
        """
        return self.bn(self.pool(inputs))
