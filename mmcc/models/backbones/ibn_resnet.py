"""IBN-Net "a" variant of mmpretrain's ResNet (Pan et al., ECCV 2018).

`Two at Once: Enhancing Learning and Generalization Capacities via IBN-Net
<https://arxiv.org/abs/1807.09441>`_. IBN-a instance-normalises half of the
channels after the first 1x1 conv of every bottleneck of stages 1-3: IN
removes appearance (colour, style, lighting) variation that shallow
features carry, while the BN half keeps the content; stage 4 stays plain
because there IN would hurt discrimination.
"""
from typing import Optional

import torch
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmpretrain.models.backbones.resnet import Bottleneck, ResLayer, ResNet
from torch import nn

from mmcc.registry import MODELS


class IBN(BaseModule):
    """Instance-Batch Normalisation: IN on the first channels, BN on the rest.

    With C input channels, the first ``int(C * in_ratio)`` go through
    ``InstanceNorm2d(affine=True)`` (statistics of each image, no running
    statistics, hence the same in train and eval mode) and the others through
    the BatchNorm built from ``norm_cfg``. The two halves are concatenated
    back in the original channel order.

    Args:
        channels (int): Input (and output) channels C.
        in_ratio (float): Fraction of the channels that are instance-
            normalised. Defaults to 0.5, as in IBN-Net.
        norm_cfg (dict): Config of the batch normalisation of the remaining
            channels. Defaults to ``dict(type='BN')``.
        init_cfg (dict, optional): Initialisation config.

    Shape:
        - Input: (B, C, H, W), with H * W > 1 in training mode.
        - Output: (B, C, H, W).
    """

    def __init__(self,
                 channels: int,
                 in_ratio: float = 0.5,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.in_channels = int(channels * in_ratio)
        if not 0 < self.in_channels < channels:
            raise ValueError(f'in_ratio={in_ratio} leaves no channel to one '
                             f'of IN and BN out of {channels}')
        # Same module names as IBN-Net ('IN', 'BN'), so that its checkpoints
        # keep their key names.
        self.IN = nn.InstanceNorm2d(self.in_channels, affine=True)
        # IN has no running statistics to freeze; norm_cfg's requires_grad
        # still decides whether its affine parameters train, as for BN.
        self.IN.requires_grad_(norm_cfg.get('requires_grad', True))
        self.BN = build_norm_layer(norm_cfg, channels - self.in_channels)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (B, C, H, W) into (B, C, H, W)."""
        in_part = x[:, :self.in_channels]
        bn_part = x[:, self.in_channels:]
        return torch.cat([self.IN(in_part), self.BN(bn_part)], dim=1)


class IBNBottleneck(Bottleneck):
    """mmpretrain's Bottleneck whose first norm layer may be an :class:`IBN`.

    Only ``norm1`` (after the 1x1 ``conv1``, on ``mid_channels`` channels)
    changes; it keeps its name (``bn1`` with a BN ``norm_cfg``), so the
    block's ``norm1`` property, ``forward`` and checkpoint keys are those of
    the parent. The stride stays where ``style`` puts it (the 3x3 conv for
    ``'pytorch'``, as in IBN-Net).

    Args:
        with_ibn (bool): Replace ``norm1`` with IBN. Defaults to False, a
            plain Bottleneck.
        **kwargs: Arguments of mmpretrain's ``Bottleneck``.

    Shape:
        - Input: (B, in_channels, H, W).
        - Output: (B, out_channels, H / stride, W / stride).
    """

    def __init__(self, *args, with_ibn: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.with_ibn = with_ibn
        if with_ibn:
            # add_module replaces the BN built by the parent under that name
            self.add_module(self.norm1_name,
                            IBN(self.mid_channels, norm_cfg=self.norm_cfg))


@MODELS.register_module()
class IBNResNet(ResNet):
    """IBN-ResNet backbone: mmpretrain's ResNet with IBN-Net's IBN-a blocks.

    Stem, strides, dilations, ``out_indices``, ``frozen_stages``,
    ``norm_eval`` and ``init_cfg`` behave as in mmpretrain's ``ResNet``; the
    bottlenecks of stages 1-3 have an :class:`IBN` as their first norm layer
    and stage 4 is unchanged. Checkpoints of the official IBN-Net
    ``resnet{50,101}_ibn_a`` convert with
    ``tools/model_converters/ibn_resnet_to_mmcc.py``.

    Args:
        depth (int): 50 or 101.
        ibn (str): IBN-Net variant; only ``'a'``. Defaults to ``'a'``.
        init_cfg (dict | list[dict]): As mmpretrain's ResNet, with the
            instance norms also set to weight 1, bias 0.
        **kwargs: Other arguments of mmpretrain's ``ResNet`` (``strides``
            defaults to ``(1, 2, 2, 2)``; re-ID configs use a last stride of
            1).

    Shape:
        - Input: (B, 3, H, W).
        - Output: a tuple with, for each stage i in ``out_indices``,
          (B, 256 * 2**i, H / S_i, W / S_i), where S_i is 4 (stem) times the
          product of ``strides[:i + 1]``; e.g. (B, 2048, 16, 8) from
          (B, 3, 256, 128) with ``strides=(1, 2, 2, 1)``.
    """

    arch_settings = {
        depth: (IBNBottleneck, ResNet.arch_settings[depth][1])
        for depth in (50, 101)
    }
    # Which stages (layer1..layer4) get IBN blocks, per IBN-Net variant.
    ibn_settings = {'a': (True, True, True, False)}

    def __init__(self,
                 depth: int,
                 ibn: str = 'a',
                 init_cfg=[
                     dict(type='Kaiming', layer=['Conv2d']),
                     dict(
                         type='Constant',
                         val=1,
                         layer=['_BatchNorm', '_InstanceNorm', 'GroupNorm'])
                 ],
                 **kwargs):
        if depth not in self.arch_settings:
            raise ValueError(f'IBNResNet depth must be one of '
                             f'{sorted(self.arch_settings)}, got {depth!r}')
        if ibn not in self.ibn_settings:
            raise ValueError(f'IBNResNet ibn must be one of '
                             f'{sorted(self.ibn_settings)}, got {ibn!r}')
        # Read by make_res_layer, which ResNet.__init__ calls.
        self.ibn = ibn
        self.stage_with_ibn = self.ibn_settings[ibn]
        super().__init__(depth, init_cfg=init_cfg, **kwargs)

    def make_res_layer(self, **kwargs) -> ResLayer:
        """Build one stage, with IBN blocks if IBN-a puts them there."""
        # ResNet.__init__ builds the stages in order and appends each name to
        # res_layers right after this call: its length is the stage index.
        stage = len(self.res_layers)
        return ResLayer(with_ibn=self.stage_with_ibn[stage], **kwargs)

    def train(self, mode: bool = True) -> 'IBNResNet':
        """Set training mode as mmpretrain's ResNet does, returning self.

        mmpretrain's ``ResNet.train`` returns None, so ``model.eval()``
        could not be chained as with any other ``nn.Module``.
        """
        super().train(mode)
        return self
