# The README's main job (`make demo`): Cluster Contrast on the built-in
# synthetic data (tools/dataset_converters/generate_synthetic_reid.py) with
# ImageNet MobileNetV2, CPU-sized: 128x64 input, P x Z = 8 x 8 batches,
# short epochs.
_base_ = [
    '../_base_/models/mobilenetv2_cluster_contrast.py',
    '../_base_/datasets/market1501_128x64.py',
    '../_base_/schedules/adam_50e.py',
    '../_base_/pseudo_label_dbscan.py',
    '../_base_/default_runtime.py',
]
data_root = 'data/synthetic_reid/'
data_source = dict(data_root=data_root)
train_dataloader = dict(
    batch_size=64,
    sampler=dict(num_instances=8, iters_per_epoch=40),
    dataset=data_source)
# The embedding and evaluation passes read in the main process: their test
# pipeline costs 0.15 ms an image, and on 2 cores two loader processes
# slowed the model more than they helped (3,200 images: 9.1 s with 2
# workers, 5.8 s without; the same embeddings).
cluster_dataloader = dict(dataset=data_source, num_workers=0)
# The embedding pass reads the same 3,200 images through a deterministic
# pipeline every epoch: its batches (79 MB) are kept after the first.
# The run also validates the ImageNet model before training (the baseline,
# epoch 0 of the accuracy curve) and draws the trained model's ranked lists
# from its last validation into WORK_DIR/ranked_lists: `make demo` is this
# one process.
custom_hooks = [
    dict(
        type='PseudoLabelHook',
        cluster=dict(type='dbscan', eps=0.6, min_samples=4, k1=30, k2=6),
        cache_batches=True),
    dict(type='ValBeforeTrainHook'),
    dict(type='RankedListHook', when='last_val'),
]
# (persistent_workers named: mmpretrain's tools/train.py turns it on by
# default, which a loader without workers refuses)
val_dataloader = dict(
    dataset=data_source, num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader

train_cfg = dict(max_epochs=14, val_interval=14)
param_scheduler = dict(milestones=[11])
default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval=14, max_keep_ckpts=1))
