from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel

from mmcc.models.utils import FoldedBackboneCache, convert_precise_batch_norm
from mmcc.registry import MODELS


@MODELS.register_module()
class ReIDModel(BaseModel):
    """A re-ID embedding model: backbone -> neck -> (training) memory head.

    Any mmpretrain backbone can be plugged in by config, e.g.
    ``dict(type='mmpretrain.ResNet', depth=50, strides=(1, 2, 2, 1))`` for the
    paper, ``dict(type='mmpretrain.MobileNetV2', out_indices=(7, ))`` or a
    ViT returning its class token.
    There is no classifier: in training, the cluster memory head plays that
    role. At test time the output is the L2-normalised neck output.

    Swapping ``backbone`` alone is enough: when the neck config has no
    ``in_channels`` (or None) it is read off one forward pass of the
    backbone on a zero image of ``probe_size`` (eval mode, no gradient, so
    nothing is trained or updated), and the head's ``feat_dim`` likewise
    from the neck's ``out_channels``. A backbone that returns (B, C) vectors
    then gets a neck without pooling.

    Args:
        backbone (dict): Backbone config.
        neck (dict): Neck config, mapping backbone outputs to (B, D),
            e.g. ``dict(type='BNNeck')``.
        head (dict, optional): Training head, e.g. ``ClusterMemoryHead``.
            Not needed for feature extraction or evaluation.
        data_preprocessor (dict, optional): Defaults to mmpretrain's
            ``ClsDataPreprocessor`` with ImageNet mean/std on RGB images.
        probe_size (tuple[int, int]): (H, W) of the image that infers the
            channel sizes; any size the backbone accepts. Defaults to
            (256, 128).
        channels_last (bool): Keep the backbone's 4-D weights and the
            images in the channels-last memory format. The numbers are the
            same up to float rounding; on CPUs the convolutions run faster
            (ImageNet MobileNetV2 at 256x128, measured on an AVX2 CPU and an
            AVX512-BF16 one: 1.3-2.2x; see docs/scaling.md). The
            backbone's ``nn.BatchNorm2d`` layers become
            :class:`PreciseBatchNorm2d`, because torch's CPU kernel loses
            precision on channels-last batch statistics. Defaults to True.
        fold_batch_norm (bool): In eval mode (embedding passes, validation,
            test), run a copy of the backbone with each BatchNorm folded
            into the convolution before it: same outputs up to float
            rounding (checked on a probe image; no folding if they differ),
            one pass less per layer. The model's own modules, state dict
            and exports are unchanged. Defaults to True.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 probe_size: Tuple[int, int] = (256, 128),
                 channels_last: bool = True,
                 fold_batch_norm: bool = True,
                 init_cfg: Optional[dict] = None):
        if data_preprocessor is None:
            data_preprocessor = dict(
                type='mmpretrain.ClsDataPreprocessor',
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                to_rgb=True)
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.channels_last = channels_last
        if channels_last:
            # in place: later weight loading copies into these strides
            self.backbone.to(memory_format=torch.channels_last)
            self.backbone = convert_precise_batch_norm(self.backbone)
        # a plain attribute, not a submodule: the copy stays out of the
        # state dict, the optimiser and DDP
        self._folded_backbone = (
            FoldedBackboneCache(probe_size) if fold_batch_norm else None)
        neck = dict(neck)
        if neck.get('in_channels') is None:
            out_shape = self._backbone_out_shape(probe_size)
            neck['in_channels'] = out_shape[1]
            if len(out_shape) == 2:
                # (B, C) vectors (a ViT's class token, ConvNeXt): nothing to
                # pool, and an unused GeM exponent would stall DDP
                neck['pooling'] = None
        self.neck = MODELS.build(neck)
        if head is not None:
            head = dict(head)
            if head.get('feat_dim') is None:
                head['feat_dim'] = self.neck.out_channels
        self.head = MODELS.build(head) if head is not None else None

    @torch.no_grad()
    def _backbone_out_shape(self, probe_size: Tuple[int, int]) -> tuple:
        """Shape of the backbone's last output for one zero image."""
        was_training = self.backbone.training
        self.backbone.eval()  # BN keeps its statistics
        try:
            out = self.backbone(self._layout(torch.zeros(1, 3, *probe_size)))
        finally:
            self.backbone.train(was_training)
        if isinstance(out, (tuple, list)):
            out = out[-1]
        return tuple(out.shape)

    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, D) neck features, not normalised."""
        backbone = self.backbone
        if self._folded_backbone is not None and not self.training:
            backbone = self._folded_backbone.get(
                self.backbone, torch.channels_last
                if self.channels_last else torch.contiguous_format)
        return self.neck(backbone(self._layout(inputs)))

    def train(self, mode: bool = True):
        """Also frees the folded eval copy when training starts."""
        super().train(mode)
        if mode and getattr(self, '_folded_backbone', None) is not None:
            self._folded_backbone.clear()
        return self

    def _layout(self, inputs: torch.Tensor) -> torch.Tensor:
        """Images in the backbone's memory format."""
        if self.channels_last and inputs.dim() == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List] = None,
                mode: str = 'tensor'):
        """The three mmengine modes.

        - ``tensor``: (B, D) L2-normalised embeddings.
        - ``loss``: the head's loss dict; needs ``data_samples`` carrying
          ``sample_idx`` (the head looks up the pseudo-labels by index).
        - ``predict``: ``data_samples`` with ``pred_feat`` (D, ) set.
        """
        if mode == 'tensor':
            return F.normalize(self.extract_feat(inputs), dim=1)
        if mode == 'loss':
            if self.head is None:
                raise RuntimeError('ReIDModel needs a head to compute losses')
            return self.head.loss(self.extract_feat(inputs), data_samples)
        if mode == 'predict':
            feats = F.normalize(self.extract_feat(inputs), dim=1)
            if data_samples is None:
                from mmpretrain.structures import DataSample
                data_samples = [DataSample() for _ in range(feats.size(0))]
            for sample, feat in zip(data_samples, feats):
                sample.set_field(feat, 'pred_feat', field_type='data')
            return data_samples
        raise RuntimeError(f'Invalid mode "{mode}"')
