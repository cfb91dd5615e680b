# What every ablation arm shares: the market1501-trainsplit CPU recipe
# (ImageNet MobileNetV2 with frozen_stages=2, 128x64 input, average pooling,
# P x Z = 16 x 8, cluster memory with the mean update at m = 0.1, DBSCAN at
# eps 0.5) on a shortened schedule: 12 epochs of 50 iterations, lr x0.1 from
# epoch 9 on, evaluation every 3 epochs, one checkpoint, written at the end
# (no best-mAP checkpoints: each would cost a save at every improvement).
# Logged every 10 iterations, the window of mmengine's timer, so the logged
# step times cover every iteration once.
_base_ = ('../../cluster-contrast_mobilenetv2_dbscan_1xb128-36e_'
          'market1501-trainsplit.py')

train_dataloader = dict(sampler=dict(iters_per_epoch=50))
train_cfg = dict(max_epochs=12, val_interval=3)
param_scheduler = dict(milestones=[9])
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(
        interval=-1, save_last=True, max_keep_ckpts=1, save_best=None))
