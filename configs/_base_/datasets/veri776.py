_base_ = './market1501.py'

# VeRi-776 vehicles at 224x224, 400 iterations an epoch.
img_scale = (224, 224)
crop_size = (224, 224)
meta_keys = ('sample_idx', 'img_path', 'camid', 'is_query')
# the reference's transforms, as in ./market1501.py
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
dataset_type = 'VeRi776'
data_root = 'data/veri776/'
data_source = dict(type=dataset_type, data_root=data_root)
train_dataloader = dict(
    dataset=dict(data_source, pipeline=train_pipeline),
    sampler=dict(iters_per_epoch=400))
cluster_dataloader = dict(dataset=dict(data_source, pipeline=test_pipeline))
val_dataloader = dict(dataset=dict(data_source, pipeline=test_pipeline))
test_dataloader = val_dataloader
