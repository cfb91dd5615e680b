# The reference's model with the backbone of its best log: ImageNet
# IBN-ResNet50-a (IBN-Net, Pan et al., ECCV 2018), last stride 1 (16x8
# feature map at 256x128); GeM, BN neck and cluster memory as in
# resnet50_cluster_contrast.py.
_base_ = './resnet50_cluster_contrast.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='IBNResNet',
        depth=50,
        ibn='a',
        strides=(1, 2, 2, 1),
        out_indices=(3, ),
        # IBN-Net's ImageNet weights in mmcc's layout, made from the public
        # resnet50_ibn_a-d9d0bb7b.pth (IBN-Net's v1.0 release) with
        #   python tools/model_converters/ibn_resnet_to_mmcc.py \
        #       resnet50_ibn_a-d9d0bb7b.pth \
        #       checkpoints/resnet50_ibn_a_mmcc.pth --verify
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/resnet50_ibn_a_mmcc.pth')))
