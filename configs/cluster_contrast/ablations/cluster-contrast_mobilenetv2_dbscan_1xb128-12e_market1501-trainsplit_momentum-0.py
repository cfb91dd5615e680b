# Ablations: no momentum (m = 0 instead of 0.1): each query replaces its
# cluster's feature, so the memory holds the newest query of each cluster.
# m is the weight on the old feature, as in the reference:
# phi <- m phi + (1 - m) q.
_base_ = './_base_/ablation_12e.py'
model = dict(head=dict(momentum=0.0))
