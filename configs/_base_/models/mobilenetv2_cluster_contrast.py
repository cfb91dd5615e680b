# ImageNet MobileNetV2 (the only ImageNet CNN weights reachable on machines
# without internet; make them with
#   python tools/model_converters/mobilenetv2_to_mmpretrain.py \
#       checkpoints/mobilenetv2_mmpretrain.pth --download checkpoints/
# ), average pooling, BN neck with frozen bias, cluster memory. Channel
# sizes (1280) are inferred from the backbone.
model = dict(
    type='ReIDModel',
    backbone=dict(
        type='mmpretrain.MobileNetV2',
        widen_factor=1.0,
        out_indices=(7, ),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/mobilenetv2_mmpretrain.pth')),
    neck=dict(
        type='BNNeck', pooling=dict(type='mmpretrain.GlobalAveragePooling')),
    head=dict(
        type='ClusterMemoryHead',
        momentum=0.1,
        temperature=0.05,
        update_mode='mean',
        loss=dict(type='ClusterNCELoss')))
