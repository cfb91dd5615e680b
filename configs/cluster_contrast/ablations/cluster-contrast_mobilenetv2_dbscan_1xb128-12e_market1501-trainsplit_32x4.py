# Ablations: batches of P x Z = 32 pseudo-identities x 4 images (128, as the
# main arm) instead of 16 x 8.
_base_ = './_base_/ablation_12e.py'
train_dataloader = dict(batch_size=128, sampler=dict(num_instances=4))
