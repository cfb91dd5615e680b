# Ablations: batches of P x Z = 8 pseudo-identities x 8 images (64) instead
# of 16 x 8; the same 50 iterations an epoch, so half the images per epoch.
_base_ = './_base_/ablation_12e.py'
train_dataloader = dict(batch_size=64)
