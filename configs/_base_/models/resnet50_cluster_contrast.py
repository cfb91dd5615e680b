# The paper's model: ImageNet ResNet-50 with last stride 1 (16x8 feature map
# at 256x128), average pooling, BN neck with frozen bias, cluster memory.
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
        in_channels=2048,
        pooling=dict(type='mmpretrain.GlobalAveragePooling')),
    head=dict(
        type='ClusterMemoryHead',
        feat_dim=2048,
        momentum=0.1,
        temperature=0.05,
        update_mode='mean',
        loss=dict(type='ClusterNCELoss')))
