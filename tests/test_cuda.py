"""The CUDA paths (tools/analysis_tools/gpu_check.py), as tests.

Marked ``cuda``: they skip on machines without a GPU, like every machine of
the project's; ``tools/analysis_tools/gpu_check.sh`` runs them on one that
has.
"""
import os.path as osp
import runpy

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CHECKS = runpy.run_path(
    osp.join(ROOT, 'tools', 'analysis_tools', 'gpu_check.py'))['CHECKS']

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
]


@pytest.mark.parametrize('name', sorted(CHECKS))
def test_cuda_path(name):
    assert CHECKS[name]()
