# Cluster Contrast on ../shared/data/market1501-trainsplit with ImageNet
# MobileNetV2, sized to finish within an hour on 2 CPU cores
# (tools/analysis_tools/run_market1501_trainsplit.sh runs it and writes the
# log and metrics to its work directory).
#
# What makes it fit (see the closing notes of the training issue):
# - 128x64 input: the crops' own resolution (Market crops are 64x128), 4x
#   fewer pixels than 256x128, so embedding and training are ~4x cheaper;
# - frozen stem and first stages: no backward pass through the
#   highest-resolution layers;
# - P x Z = 16 x 8 = 128 images a batch, 50 iterations an epoch.
_base_ = [
    '../_base_/models/mobilenetv2_cluster_contrast.py',
    '../_base_/datasets/market1501.py',
    '../_base_/schedules/adam_50e.py',
    '../_base_/pseudo_label_dbscan.py',
    '../_base_/default_runtime.py',
]
model = dict(backbone=dict(frozen_stages=2))

dataset_type = 'Market1501'
data_root = '../shared/data/market1501-trainsplit/'
img_scale = (64, 128)  # (W, H)
crop_size = (128, 64)  # (H, W)
meta_keys = ('sample_idx', 'img_path', 'camid', 'is_query')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, interpolation='bilinear'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='mmpretrain.RandomCrop', crop_size=crop_size, padding=5),
    dict(
        type='mmpretrain.RandomErasing',
        erase_prob=0.5,
        mode='const',
        fill_color=(103.53, 116.28, 123.675)),
    dict(type='mmpretrain.PackInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, interpolation='bilinear'),
    dict(type='mmpretrain.PackInputs', meta_keys=meta_keys),
]
data_source = dict(type=dataset_type, data_root=data_root)
train_dataloader = dict(
    batch_size=128,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(num_instances=8, batch_size=128, iters_per_epoch=50),
    dataset=dict(data_source, pipeline=train_pipeline))
cluster_dataloader = dict(
    batch_size=128,
    num_workers=2,
    dataset=dict(data_source, pipeline=test_pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=2,
    dataset=dict(data_source, pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(max_epochs=20, val_interval=5)
param_scheduler = dict(milestones=[15])
default_hooks = dict(
    logger=dict(interval=25), checkpoint=dict(interval=5, max_keep_ckpts=1))
