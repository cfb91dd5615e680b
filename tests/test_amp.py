"""``--amp``: float16 on CUDA, bfloat16 on CPUs that have it, else refused
before anything is built."""
import os.path as osp
import runpy

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmpretrain.structures import DataSample

import mmcc.engine.optimizers.cpu_autocast_optim_wrapper as amp_module
from mmcc.engine.optimizers import amp_optim_wrapper
from mmcc.registry import MODELS
from mmcc.utils import cpu_has_native_bf16, register_all_modules

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(
    ROOT, 'configs/cluster_contrast/'
    'cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py')
OPTIM = dict(optimizer=dict(type='Adam', lr=3.5e-4))


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)


def test_amp_picks_the_wrapper_the_machine_supports(cpu_only, monkeypatch):
    monkeypatch.setattr(amp_module, 'cpu_has_native_bf16', lambda: True)
    cfg = amp_optim_wrapper(OPTIM)
    assert cfg['type'] == 'mmcc.CPUAutocastOptimWrapper'
    assert cfg['dtype'] == 'bfloat16'
    assert cfg['optimizer'] == OPTIM['optimizer']
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = amp_optim_wrapper(OPTIM)
    assert cfg['type'] == 'AmpOptimWrapper' and cfg['loss_scale'] == 'dynamic'


def test_train_refuses_amp_on_a_cpu_without_bf16(cpu_only, monkeypatch):
    """The refusal comes from the command line, before the Runner (and so
    the model or the data) is built."""
    monkeypatch.setattr(amp_module, 'cpu_has_native_bf16', lambda: False)
    train = runpy.run_path(osp.join(ROOT, 'tools', 'train.py'))
    built = []
    monkeypatch.setattr(train['Runner'], 'from_cfg',
                        classmethod(lambda cls, cfg: built.append(cfg)))
    with pytest.raises(ValueError, match='native bfloat16'):
        train['build_runner']([DEMO_CONFIG, '--amp'])
    assert not built


@pytest.mark.skipif(
    not cpu_has_native_bf16(), reason='this CPU has no native bfloat16')
def test_bf16_autocast_trains_the_model_on_this_cpu():
    register_all_modules(init_default_scope=False)
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='ReIDModel',
            backbone=dict(
                type='mmpretrain.ResNet', depth=18, out_indices=(3, )),
            neck=dict(type='BNNeck'),
            head=dict(type='ClusterMemoryHead'),
            probe_size=(64, 32)))
    wrapper = build_optim_wrapper(model, amp_optim_wrapper(OPTIM))
    assert type(wrapper).__name__ == 'CPUAutocastOptimWrapper'
    model.head.reset(torch.randn(2, 512), torch.tensor([0, 1] * 4))
    samples = [DataSample(metainfo=dict(sample_idx=i)) for i in range(8)]
    dtypes = []
    model.backbone.conv1.register_forward_hook(
        lambda module, inputs, output: dtypes.append(output.dtype))
    before = model.backbone.conv1.weight.detach().clone()
    with wrapper.optim_context(model):
        losses = model(torch.randn(8, 3, 64, 32), samples, mode='loss')
    wrapper.update_params(losses['loss'])
    assert dtypes == [torch.bfloat16]  # the forward ran in bfloat16
    assert torch.isfinite(losses['loss'])
    # the parameters and the cluster memory stay float32
    assert model.backbone.conv1.weight.dtype == torch.float32
    assert not torch.equal(before, model.backbone.conv1.weight)
    assert model.head.memory.dtype == torch.float32
    torch.testing.assert_close(model.head.memory.norm(dim=1), torch.ones(2))
