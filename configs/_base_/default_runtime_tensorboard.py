# default_runtime.py with TensorBoard: scalars (loss, lr, pseudo/*, reid/*)
# and images (e.g. tools/test.py --show-dir ranked lists) also go to
# TensorBoard event files in the run's vis_data folder:
#     tensorboard --logdir work_dirs/<run>
# Use it in place of default_runtime.py in a config's _base_ list; needs
# `pip install tensorboard` (requirements/optional.txt).
_base_ = './default_runtime.py'

vis_backends = [
    dict(type='LocalVisBackend'),
    dict(type='TensorboardVisBackend'),
]
visualizer = dict(type='ReIDVisualizer', vis_backends=vis_backends)
