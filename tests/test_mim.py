"""`mim train mmcc CONFIG` finds our tools and configs."""
import os.path as osp
import warnings

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_mim_resolves_train_script_and_configs():
    mim_utils = pytest.importorskip('mim.utils')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # mim imports pkg_resources
        pkg_root = mim_utils.get_installed_path('mmcc')
    train = osp.join(pkg_root, '.mim', 'tools', 'train.py')
    test = osp.join(pkg_root, '.mim', 'tools', 'test.py')
    assert osp.isfile(train) and osp.isfile(test)
    assert osp.samefile(train, osp.join(ROOT, 'tools', 'train.py'))
    demo = osp.join(pkg_root, '.mim', 'configs', 'cluster_contrast',
                    'cluster-contrast_mobilenetv2_dbscan_synthetic.py')
    assert osp.isfile(demo)
