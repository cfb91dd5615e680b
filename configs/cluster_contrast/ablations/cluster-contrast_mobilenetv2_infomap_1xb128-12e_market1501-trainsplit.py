# Ablations: Infomap on the cosine kNN graph instead of DBSCAN, with the
# paper's settings (configs/_base_/pseudo_label_infomap.py): k1 = 15
# neighbours, edges of similarity >= 0.5, communities of k2 = 4 or fewer
# members are noise.
_base_ = './_base_/ablation_12e.py'
custom_hooks = [
    dict(
        type='PseudoLabelHook',
        cluster=dict(type='infomap', k1=15, k2=4, min_sim=0.5))
]
