# Ablations: every MobileNetV2 stage trained (frozen_stages=-1) instead of
# the stem and first two stages frozen.
_base_ = './_base_/ablation_12e.py'
model = dict(backbone=dict(frozen_stages=-1))
