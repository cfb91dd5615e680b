# The README's main job: Cluster Contrast on the built-in synthetic data
# (tools/dataset_converters/generate_synthetic_reid.py), ImageNet
# MobileNetV2, CPU-sized: 128x64 input (the crops' own resolution), small
# P x Z batches and short epochs.
_base_ = [
    '../_base_/models/mobilenetv2_cluster_contrast.py',
    '../_base_/datasets/market1501.py',
    '../_base_/schedules/adam_50e.py',
    '../_base_/pseudo_label_dbscan.py',
    '../_base_/default_runtime.py',
]
dataset_type = 'Market1501'
data_root = 'data/synthetic_reid/'
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

# 8 pseudo-identities x 8 images
train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(num_instances=8, batch_size=64, iters_per_epoch=30),
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

train_cfg = dict(max_epochs=8, val_interval=8)
param_scheduler = dict(milestones=[6])
default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval=8, max_keep_ckpts=1))
