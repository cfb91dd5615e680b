_base_ = [
    '../_base_/models/resnet50_cluster_contrast.py',
    '../_base_/datasets/market1501.py',
    '../_base_/schedules/adam_50e.py',
    '../_base_/pseudo_label_infomap.py',
    '../_base_/default_runtime.py',
]
# One GPU: batch 256 = 16 pseudo-identities x 16 images. On N GPUs set
# train_dataloader.batch_size=256/N (the sampler then draws 16/N identities
# per GPU); the reference trained on 4 GPUs.
