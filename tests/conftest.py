"""Fixtures shared by the test modules."""
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(
    ROOT, 'configs/cluster_contrast/'
    'cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py')


@pytest.fixture(scope='module')
def single_thread():
    """Torch on one thread for a module's tests, then as it was: on the
    shared 2-core machine one thread ran a ResNet-50 forward + backward 3x
    faster than two (the two threads wait on each other)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='session')
def tiny_synthetic(tmp_path_factory):
    """A synthetic Market-layout tree: 8 training identities x 8 images
    (64), 4 test identities, 3 cameras. Read-only for the tests."""
    from mmcc.testing.synthetic import generate_synthetic_reid
    root = tmp_path_factory.mktemp('synthetic')
    generate_synthetic_reid(
        str(root),
        num_train_ids=8,
        num_test_ids=4,
        images_per_id=8,
        num_cams=3,
        seed=3)
    return str(root)
