_base_ = [
    '../_base_/models/resnet50_cluster_contrast.py',
    '../_base_/datasets/msmt17.py',
    '../_base_/schedules/adam_50e.py',
    '../_base_/pseudo_label_dbscan.py',
    '../_base_/default_runtime.py',
]
# 1xb256: one process, batch 256 = 16 pseudo-identities x 16 images, so
# BatchNorm normalises over 256 images. The reference ran 4 GPUs with
# DataParallel (BatchNorm over 64 each): see the 4xb64 config. On N
# processes, train_dataloader.batch_size=256/N keeps the global batch.
