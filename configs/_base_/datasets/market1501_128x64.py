_base_ = './market1501.py'

# Market-layout data at 128x64 (H x W), the crops' own resolution: 4x fewer
# pixels than the paper's 256x128, for CPU-sized runs. Batches of
# P x Z = 16 x 8 = 128 images, 50 iterations an epoch. Its transforms are
# this CPU recipe's own, measured with it (bilinear resize, erasing to the
# mean before normalisation); the paper base has the reference's.
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
train_dataloader = dict(
    batch_size=128,
    num_workers=2,
    sampler=dict(num_instances=8, iters_per_epoch=50),
    dataset=dict(pipeline=train_pipeline))
cluster_dataloader = dict(
    batch_size=128, num_workers=2, dataset=dict(pipeline=test_pipeline))
val_dataloader = dict(
    batch_size=128, num_workers=2, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
