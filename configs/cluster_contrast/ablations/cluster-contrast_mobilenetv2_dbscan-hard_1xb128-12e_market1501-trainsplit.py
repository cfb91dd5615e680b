# Ablations: the hard update (per cluster in the batch, only its query least
# similar to the cluster feature) instead of the mean update (every query,
# in batch order). "dbscan-hard" as in the IBN-ResNet50-a config's name.
_base_ = './_base_/ablation_12e.py'
model = dict(head=dict(update_mode='hard'))
