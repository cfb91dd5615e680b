# Market-1501 at 256x128 (H x W). Images are loaded as BGR; the model's data
# preprocessor converts to RGB and applies ImageNet mean/std.
dataset_type = 'Market1501'
data_root = 'data/market1501/'
img_scale = (128, 256)  # (W, H), mmcv's convention
crop_size = (256, 128)  # (H, W), mmpretrain's convention
meta_keys = ('sample_idx', 'img_path', 'camid', 'is_query')

# The reference's transforms: bicubic resize, flip, pad 10 + random crop,
# and random erasing after normalisation, filling with 0.4914/0.4822/0.4465
# in normalised units (NormalizedRandomErasing fills with the raw value that
# the data preprocessor normalises to exactly that).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='mmpretrain.RandomCrop', crop_size=crop_size, padding=10),
    dict(type='NormalizedRandomErasing', prob=0.5),
    dict(type='mmpretrain.PackInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, interpolation='bicubic'),
    dict(type='mmpretrain.PackInputs', meta_keys=meta_keys),
]

# P x Z = 16 pseudo-identities x 16 instances = 256 images per process,
# 200 iterations. batch_size is the one key of the layout: the batch sampler
# hands it to the P x Z sampler, which derives P = 256 // 16.
train_dataloader = dict(
    batch_size=256,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(
        type='CameraAwareIdentitySampler',
        num_instances=16,
        iters_per_epoch=200),
    batch_sampler=dict(type='IdentityBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline))

# The pseudo-label hook embeds the training set with the test pipeline.
cluster_dataloader = dict(
    batch_size=256,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=test_pipeline))

val_dataloader = dict(
    batch_size=256,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=False),
    # query images first, then the gallery; ReIDMetric tells them apart by
    # each sample's `is_query`
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split=('query', 'gallery'),
        pipeline=test_pipeline))
val_evaluator = dict(type='ReIDMetric')
test_dataloader = val_dataloader
test_evaluator = val_evaluator
