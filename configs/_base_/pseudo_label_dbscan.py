# Pseudo-labels before every epoch: k-reciprocal Jaccard distance
# (k1=30, k2=6) and DBSCAN (eps=0.6, min_samples=4), noise dropped. The hook
# embeds the training set with the config's `cluster_dataloader`.
custom_hooks = [
    dict(
        type='PseudoLabelHook',
        cluster=dict(type='dbscan', eps=0.6, min_samples=4, k1=30, k2=6))
]
