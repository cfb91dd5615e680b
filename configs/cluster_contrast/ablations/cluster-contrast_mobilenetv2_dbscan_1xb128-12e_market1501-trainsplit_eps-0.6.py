# Ablations: DBSCAN eps 0.6 (the paper's) instead of the CPU recipe's 0.5.
_base_ = './_base_/ablation_12e.py'
custom_hooks = [
    dict(
        type='PseudoLabelHook',
        cluster=dict(type='dbscan', eps=0.6, min_samples=4, k1=30, k2=6))
]
