# Another backbone: swap model.backbone, nothing else (channel sizes are
# inferred). _delete_ drops the ResNet-50 keys the base config sets.
_base_ = '../cluster-contrast_r50_dbscan_1xb256-50e_market1501.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.ResNet',
        depth=18,
        strides=(1, 2, 2, 1),
        out_indices=(3, ),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.openmmlab.com/mmclassification/v0/'
            'resnet/resnet18_8xb32_in1k_20210831-fbbb1da6.pth',
            prefix='backbone.')))
