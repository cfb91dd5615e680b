# The reference's model: ImageNet ResNet-50 with last stride 1 (16x8 feature
# map at 256x128), trainable GeM pooling (p = 3, the default of the
# reference's scripts, which none of its published commands overrides), BN
# neck with frozen bias, cluster memory. Channel sizes are inferred from the
# backbone, so another backbone is swapped in by `model.backbone` alone.
model = dict(
    type='ReIDModel',
    backbone=dict(
        type='mmpretrain.ResNet',
        depth=50,
        strides=(1, 2, 2, 1),
        out_indices=(3, ),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.openmmlab.com/mmclassification/v0/'
            'resnet/resnet50_8xb32_in1k_20210831-ea4938fc.pth',
            prefix='backbone.')),
    neck=dict(
        type='BNNeck',
        pooling=dict(
            type='mmpretrain.GeneralizedMeanPooling', p=3.0,
            p_trainable=True)),
    head=dict(
        type='ClusterMemoryHead',
        momentum=0.1,
        temperature=0.05,
        update_mode='mean',
        loss=dict(type='ClusterNCELoss')))
