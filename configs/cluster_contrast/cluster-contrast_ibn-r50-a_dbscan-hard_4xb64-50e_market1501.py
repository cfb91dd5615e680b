_base_ = [
    '../_base_/models/ibn-resnet50-a_cluster_contrast.py',
    '../_base_/datasets/market1501.py',
    '../_base_/schedules/adam_50e.py',
    '../_base_/pseudo_label_dbscan.py',
    '../_base_/default_runtime.py',
]
# The reference's best log (87.0 mAP / 94.6 top-1 on Market-1501):
# IBN-ResNet50-a, GeM pooling, the hard memory update, DBSCAN eps 0.4,
# 400 iterations an epoch, 4 processes x 64 images (4 pseudo-identities x
# 16 each, global batch 256). Launch with
#   tools/dist_train.sh THIS_CONFIG 4
model = dict(head=dict(update_mode='hard'))
custom_hooks = [
    dict(
        type='PseudoLabelHook',
        cluster=dict(type='dbscan', eps=0.4, min_samples=4, k1=30, k2=6))
]
train_dataloader = dict(batch_size=64, sampler=dict(iters_per_epoch=400))
