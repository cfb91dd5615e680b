# Cluster Contrast on ../shared/data/market1501-trainsplit with ImageNet
# MobileNetV2, sized to finish within an hour on 2 CPU cores:
#   python tools/analysis_tools/train_and_report.py THIS_CONFIG \
#       --work-dir work_dirs/market1501-trainsplit-cpu
# writes the log and a per-epoch report (pseudo-label NMI, mAP) to the work
# directory. What makes it fit: 128x64 input (the crops' own resolution, 4x
# cheaper than 256x128), a frozen stem and first stages (no backward pass
# through the highest-resolution layers), P x Z = 16 x 8, 50 iterations,
# 36 epochs (70-80 s each on 2 otherwise idle cores).
_base_ = [
    '../_base_/models/mobilenetv2_cluster_contrast.py',
    '../_base_/datasets/market1501_128x64.py',
    '../_base_/schedules/adam_50e.py',
    '../_base_/pseudo_label_dbscan.py',
    '../_base_/default_runtime.py',
]
# frozen stem and first two stages: 1.8x faster steps; unfreezing
# (frozen_stages=-1) is better per epoch but not per minute on CPU
model = dict(backbone=dict(frozen_stages=2))
# eps 0.5 instead of the paper's 0.6: with this weaker embedding, eps 0.6
# chains identities into a few large mixed clusters that training then grows
# (the largest held 1,412 images by epoch 6; ~195 clusters for 375 ids, ARI
# 0.18 at the end, 32.7 % mAP). At 0.5 no cluster passes 140 images and the
# run ends with 336 clusters, ARI 0.45 and 34.8 % mAP. (At 12 epochs eps 0.6
# was ahead, already with clusters of 500-1,400 images: docs/ablations.md.)
# Raise eps only if the largest cluster (pseudo/size_max in the log) stays
# near the size of one identity.
custom_hooks = [
    dict(
        type='PseudoLabelHook',
        cluster=dict(type='dbscan', eps=0.5, min_samples=4, k1=30, k2=6))
]

data_root = '../shared/data/market1501-trainsplit/'
data_source = dict(data_root=data_root)
train_dataloader = dict(dataset=data_source)
cluster_dataloader = dict(dataset=data_source)
val_dataloader = dict(dataset=data_source)
test_dataloader = val_dataloader

train_cfg = dict(max_epochs=36, val_interval=6)
param_scheduler = dict(milestones=[28])
default_hooks = dict(
    logger=dict(interval=25), checkpoint=dict(interval=6, max_keep_ckpts=1))
