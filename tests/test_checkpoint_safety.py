"""Checkpoints cannot run code, whatever the environment says.

A checkpoint that pickles a call to ``os.system`` is refused by every load
mmcc's tools reach (resume, ``load_from``, ``tools/test.py``,
``init_cfg=Pretrained``, URLs), even with
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which turns ``weights_only`` off
for any ``torch.load`` that does not pass it.
"""
import os
import os.path as osp
import pickle
import runpy

import pytest
import torch
from mmengine.runner.checkpoint import _load_checkpoint

from mmcc.registry import MODELS
from mmcc.utils import register_all_modules
from mmcc.utils.checkpoint_safe_globals import load_http_checkpoint

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(
    ROOT, 'configs/cluster_contrast/'
    'cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py')


class _RunsCode:
    """Unpickling this runs a shell command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command, )


@pytest.fixture
def evil(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    marker = tmp_path / 'code-ran'
    path = tmp_path / 'evil.pth'
    torch.save(
        dict(
            state_dict=dict(w=torch.zeros(1)), x=_RunsCode(f'touch {marker}')),
        path)
    return path, marker


def test_the_environment_alone_would_run_the_code(evil):
    """The threat is real: a plain torch.load under that variable runs
    it (so the tests below would catch a loader that does not pass
    weights_only=True)."""
    path, marker = evil
    with pytest.warns(UserWarning, match='TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'):
        torch.load(path)
    assert marker.exists()


def test_mmengine_loads_through_the_safe_loader(evil):
    path, marker = evil
    with pytest.raises(pickle.UnpicklingError):
        _load_checkpoint(str(path), map_location='cpu')
    with pytest.raises(pickle.UnpicklingError):
        load_http_checkpoint(path.as_uri(), model_dir=str(path.parent / 'hub'))
    assert not marker.exists()


def test_pretrained_init_and_tools_test_refuse_it(evil, tiny_synthetic):
    path, marker = evil
    register_all_modules(init_default_scope=False)
    model = MODELS.build(
        dict(
            type='ReIDModel',
            backbone=dict(
                type='mmpretrain.MobileNetV2',
                out_indices=(7, ),
                init_cfg=dict(type='Pretrained', checkpoint=str(path))),
            neck=dict(type='BNNeck'),
            probe_size=(64, 32)))
    with pytest.raises(pickle.UnpicklingError):
        model.init_weights()
    test = runpy.run_path(osp.join(ROOT, 'tools', 'test.py'))
    with pytest.raises(pickle.UnpicklingError):
        test['main']([
            DEMO_CONFIG,
            str(path), '--work-dir',
            str(path.parent / 'work'), '--cfg-options',
            f'test_dataloader.dataset.data_root={tiny_synthetic}',
            'test_dataloader.num_workers=0'
        ])
    assert not marker.exists()


def test_mmcc_checkpoints_still_load(tmp_path, monkeypatch):
    """What mmengine itself saves (message hub buffers, numpy arrays)
    passes the allow-list."""
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('safety-test')
    hub.update_scalar('train/loss', 1.5)
    path = tmp_path / 'ok.pth'
    torch.save(
        dict(state_dict=dict(w=torch.ones(2)), message_hub=hub.state_dict()),
        path)
    checkpoint = _load_checkpoint(str(path), map_location='cpu')
    assert torch.equal(checkpoint['state_dict']['w'], torch.ones(2))
