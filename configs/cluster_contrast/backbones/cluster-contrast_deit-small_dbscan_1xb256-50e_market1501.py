# Another backbone: swap model.backbone, nothing else (channel sizes are
# inferred). _delete_ drops the ResNet-50 keys the base config sets.
# A ViT at 256x128 (16x8 patches of 16; the ImageNet position embedding is
# resized when the weights load); its class token, (B, 384), is the
# feature the neck takes.
_base_ = '../cluster-contrast_r50_dbscan_1xb256-50e_market1501.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.VisionTransformer',
        arch='deit-small',
        img_size=(256, 128),
        patch_size=16,
        out_type='cls_token',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.openmmlab.com/mmclassification/v0/'
            'deit/deit-small_pt-4xb256_in1k_20220218-9425b9bb.pth',
            prefix='backbone.')))
