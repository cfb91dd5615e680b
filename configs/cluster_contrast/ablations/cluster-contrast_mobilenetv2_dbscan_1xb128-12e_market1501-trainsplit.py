# Ablations, main arm: the CPU recipe as it is, on the shared schedule.
_base_ = './_base_/ablation_12e.py'
