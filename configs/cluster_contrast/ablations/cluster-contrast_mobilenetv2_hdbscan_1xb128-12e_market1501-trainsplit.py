# Ablations: HDBSCAN instead of DBSCAN, on the same k-reciprocal Jaccard
# distance (k1 = 30, k2 = 6); clusters of at least 4 images (DBSCAN's
# min_samples), no eps to choose.
_base_ = './_base_/ablation_12e.py'
custom_hooks = [
    dict(
        type='PseudoLabelHook',
        cluster=dict(type='hdbscan', k1=30, k2=6, min_cluster_size=4))
]
