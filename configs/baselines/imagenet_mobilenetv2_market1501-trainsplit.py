# Evaluate ImageNet MobileNetV2 features, untrained, on the Market-1501
# train-split data set at ../shared/data/market1501-trainsplit (376 query /
# gallery identities): bicubic resize to 256x128, average pooling, the BN
# neck in its initial state, L2-normalised.
#   python tools/test.py \
#       configs/baselines/imagenet_mobilenetv2_market1501-trainsplit.py
_base_ = [
    '../_base_/models/mobilenetv2_cluster_contrast.py',
    '../_base_/datasets/market1501.py',
    '../_base_/default_runtime.py',
]
data_root = '../shared/data/market1501-trainsplit/'
test_dataloader = dict(
    batch_size=64, num_workers=2, dataset=dict(data_root=data_root))
test_cfg = dict()
