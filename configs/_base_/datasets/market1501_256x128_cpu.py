_base_ = './market1501_128x64.py'

# Market-layout data at the paper's 256x128 (H x W) with the CPU recipe's
# own transforms (bilinear resize, erasing to the mean before normalisation;
# crop padding 10, the same fraction of the image as 5 at 128x64), and its
# batches (P x Z = 16 x 8 = 128 images, 50 iterations an epoch). Larger crops
# than Market's 128x64 keep their detail at this size.
img_scale = (128, 256)  # (W, H)
crop_size = (256, 128)  # (H, W)
meta_keys = ('sample_idx', 'img_path', 'camid', 'is_query')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, interpolation='bilinear'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='mmpretrain.RandomCrop', crop_size=crop_size, padding=10),
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
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
cluster_dataloader = dict(dataset=dict(pipeline=test_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
