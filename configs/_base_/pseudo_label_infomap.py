# Pseudo-labels before every epoch: Infomap on the cosine kNN graph
# (k1=15 neighbours, edges with similarity >= 0.5, communities of k2=4
# members or fewer are noise).
custom_hooks = [
    dict(
        type='PseudoLabelHook',
        cluster=dict(type='infomap', k1=15, k2=4, min_sim=0.5))
]
