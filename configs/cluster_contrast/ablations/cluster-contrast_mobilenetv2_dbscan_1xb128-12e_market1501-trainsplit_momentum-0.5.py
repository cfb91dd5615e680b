# Ablations: cluster-memory momentum m = 0.5 instead of 0.1. m is the weight
# on the old feature, as in the reference: phi <- m phi + (1 - m) q.
_base_ = './_base_/ablation_12e.py'
model = dict(head=dict(momentum=0.5))
