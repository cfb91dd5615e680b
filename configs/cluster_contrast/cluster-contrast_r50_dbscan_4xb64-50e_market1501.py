_base_ = './cluster-contrast_r50_dbscan_1xb256-50e_market1501.py'
# The reference's layout: 4 processes x 64 images (4 pseudo-identities x 16
# each), a global batch of 256 with BatchNorm over 64 images per process,
# as its 4-GPU DataParallel runs had. Launch with
#   tools/dist_train.sh THIS_CONFIG 4
train_dataloader = dict(batch_size=64)
