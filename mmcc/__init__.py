"""mmcc: Cluster Contrast for unsupervised object re-identification.

Reading order, top-down: ``datasets`` (re-ID data, samplers) -> ``models``
(backbone, neck, cluster memory head, ClusterNCE loss) -> ``clustering``
(k-reciprocal Jaccard distance, DBSCAN/Infomap/HDBSCAN) -> ``engine``
(the pseudo-label hook) -> ``evaluation`` (the re-ID ranking metric).
"""
import warnings

import mmcv
import mmengine
from mmengine.utils import digit_version

from .version import __version__

# Both ``mmcv`` (full, with ops) and ``mmcv-lite`` install the ``mmcv`` Python
# package; we only need its transforms, so either satisfies this check.
MMCV_MIN, MMCV_MAX = '2.0.0', '2.4.0'
MMENGINE_MIN, MMENGINE_MAX = '0.8.3', '1.0.0'

assert digit_version(MMCV_MIN) <= digit_version(mmcv.__version__) < \
    digit_version(MMCV_MAX), (
        f'mmcv=={mmcv.__version__} is incompatible with mmcc: install '
        f'mmcv or mmcv-lite >={MMCV_MIN}, <{MMCV_MAX}.')
assert digit_version(MMENGINE_MIN) <= digit_version(mmengine.__version__) < \
    digit_version(MMENGINE_MAX), (
        f'mmengine=={mmengine.__version__} is incompatible with mmcc: '
        f'install mmengine>={MMENGINE_MIN}, <{MMENGINE_MAX}.')

# mmcv-lite has no compiled ops; mmpretrain warns about one it never uses.
warnings.filterwarnings(
    'ignore', message='Fail to import ``MultiScaleDeformableAttention``')

# Every checkpoint mmengine loads (resume, load_from, init_cfg, tools/test.py)
# goes through torch.load(weights_only=True) with mmcc's allow-list.
from .utils.checkpoint_safe_globals import \
    register_safe_checkpoint_loaders  # noqa: E402

register_safe_checkpoint_loaders()

__all__ = ['__version__']
