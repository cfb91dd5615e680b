# Ablations: 256x128 input (the paper's size, 4x the pixels) instead of
# 128x64: the default CPU recipe itself (its pipelines: bilinear resize,
# flip, pad and random crop with 10 pixels of padding, the same fraction of
# the image as 5 at 128x64, erasing to the mean colour) on the study's
# evaluation and checkpoint schedule. Compare it with the others at equal
# minutes, not only at equal epochs.
_base_ = ('../cluster-contrast_mobilenetv2_dbscan_1xb128-12e_'
          'market1501-trainsplit-256x128.py')

# as every arm (./_base_/ablation_12e.py): evaluated every 3 epochs, logged
# every 10 iterations, one checkpoint at the end
train_cfg = dict(val_interval=3)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(
        interval=-1, save_last=True, max_keep_ckpts=1, save_best=None))
