# Another backbone: swap model.backbone, nothing else (channel sizes are
# inferred). _delete_ drops the ResNet-50 keys the base config sets.
# ConvNeXt returns pooled (B, C) vectors: the neck uses them as they are.
_base_ = '../cluster-contrast_r50_dbscan_1xb256-50e_market1501.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.ConvNeXt',
        arch='tiny',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.openmmlab.com/mmclassification/v0/'
            'convnext/convnext-tiny_32xb128_in1k_20221207-998cf3e9.pth',
            prefix='backbone.')))
