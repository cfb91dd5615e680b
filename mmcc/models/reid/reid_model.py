from typing import List, Optional

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel

from mmcc.registry import MODELS


@MODELS.register_module()
class ReIDModel(BaseModel):
    """A re-ID embedding model: backbone -> neck -> (training) memory head.

    Any mmpretrain backbone can be plugged in by config, e.g.
    ``dict(type='mmpretrain.ResNet', depth=50, strides=(1, 2, 2, 1))`` for the
    paper or ``dict(type='mmpretrain.MobileNetV2', out_indices=(7, ))``.
    There is no classifier: in training, the cluster memory head plays that
    role. At test time the output is the L2-normalised neck output.

    Args:
        backbone (dict): Backbone config.
        neck (dict): Neck config, mapping backbone outputs to (B, D),
            e.g. ``dict(type='BNNeck', in_channels=2048)``.
        head (dict, optional): Training head, e.g. ``ClusterMemoryHead``.
            Not needed for feature extraction or evaluation.
        data_preprocessor (dict, optional): Defaults to mmpretrain's
            ``ClsDataPreprocessor`` with ImageNet mean/std on RGB images.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
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
        self.neck = MODELS.build(neck)
        self.head = MODELS.build(head) if head is not None else None

    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, D) neck features, not normalised."""
        return self.neck(self.backbone(inputs))

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
