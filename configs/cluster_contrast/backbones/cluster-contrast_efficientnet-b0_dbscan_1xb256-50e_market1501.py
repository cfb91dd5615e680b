# Another backbone: swap model.backbone, nothing else (channel sizes are
# inferred). _delete_ drops the ResNet-50 keys the base config sets.
# Keep the ImageNet weights: mmpretrain's EfficientNet initialises its
# depthwise convolutions ~sqrt(C) too small (Kaiming fan_out), which train-mode
# BatchNorm hides but eval mode does not: from random weights, the clustering
# pass then embeds every image alike (see PseudoLabelHook's warning).
_base_ = '../cluster-contrast_r50_dbscan_1xb256-50e_market1501.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.EfficientNet',
        arch='b0',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.openmmlab.com/mmclassification/v0/'
            'efficientnet/'
            'efficientnet-b0_3rdparty_8xb32_in1k_20220119-a7e2a0b1.pth',
            prefix='backbone.')))
