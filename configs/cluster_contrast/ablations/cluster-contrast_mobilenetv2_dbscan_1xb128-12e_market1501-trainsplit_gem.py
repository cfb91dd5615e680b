# Ablations: GeM pooling (p = 3, trainable, as the paper configs in
# configs/_base_/models/resnet50_cluster_contrast.py) instead of average
# pooling.
_base_ = './_base_/ablation_12e.py'
model = dict(
    neck=dict(
        pooling=dict(
            _delete_=True,
            type='mmpretrain.GeneralizedMeanPooling',
            p=3.0,
            p_trainable=True)))
