# Another backbone: swap model.backbone, nothing else (channel sizes are
# inferred). _delete_ drops the ResNet-50 keys the base config sets.
_base_ = '../cluster-contrast_r50_dbscan_1xb256-50e_market1501.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.MobileNetV2',
        widen_factor=1.0,
        out_indices=(7, ),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.openmmlab.com/mmclassification/v0/'
            'mobilenet_v2/'
            'mobilenet_v2_batch256_imagenet_20200708-3b2dc3af.pth',
            prefix='backbone.')))
