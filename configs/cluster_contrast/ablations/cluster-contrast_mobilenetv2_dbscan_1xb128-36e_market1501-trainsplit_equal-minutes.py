# Ablations: the main arm (128x64) for 36 epochs instead of 12, lr x0.1 from
# epoch 27 (the same three quarters of the run). 256x128 input costs about
# three times the minutes per epoch here, so this arm is 128x64 given about
# the minutes of the 256x128 arm: the two input sizes compare at equal time,
# as well as at equal epochs against the main arm.
_base_ = './_base_/ablation_12e.py'
train_cfg = dict(max_epochs=36)
param_scheduler = dict(milestones=[27])
