"""Resuming on torch >= 2.6, where torch.load defaults to weights_only=True."""
import os
import pickle

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

from mmcc.utils import register_checkpoint_safe_globals

needs_safe_globals = pytest.mark.skipif(
    not hasattr(torch.serialization, 'add_safe_globals'),
    reason='torch < 2.4 has no weights_only allow-list')


class _ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(torch.stack(inputs))
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


class _ToyData(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.full((2, ), float(i)))


def _runner_cfg(work_dir, max_epochs, **kwargs):
    return dict(
        model=_ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_ToyData(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=4,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='Adam', lr=1e-3)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        default_scope='mmcc',
        **kwargs)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('resume')
    Runner(**_runner_cfg(work_dir, max_epochs=1)).train()
    return work_dir / 'epoch_1.pth'


@pytest.fixture
def empty_allow_list():
    """Start from torch's own allow-list and restore ours afterwards."""
    torch.serialization.clear_safe_globals()
    yield
    register_checkpoint_safe_globals()


@needs_safe_globals
def test_weights_only_load_fails_without_allow_list(checkpoint,
                                                    empty_allow_list):
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(checkpoint, weights_only=True)


@needs_safe_globals
def test_weights_only_load_works_with_allow_list(checkpoint, empty_allow_list):
    register_checkpoint_safe_globals()
    ckpt = torch.load(checkpoint, weights_only=True)
    assert ckpt['meta']['epoch'] == 1
    assert 'linear.weight' in ckpt['state_dict']


@needs_safe_globals
def test_runner_resume_continues_training(checkpoint, tmp_path):
    register_checkpoint_safe_globals()
    runner = Runner(**_runner_cfg(
        tmp_path, max_epochs=2, resume=True, load_from=str(checkpoint)))
    runner.train()
    assert runner.epoch == 2
    assert os.path.exists(tmp_path / 'epoch_2.pth')


class _Evil:

    def __reduce__(self):
        return (os.system, ('echo pwned', ))


@needs_safe_globals
def test_allow_list_still_refuses_arbitrary_code(tmp_path):
    register_checkpoint_safe_globals()
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


@needs_safe_globals
def test_restricted_getattr_refuses_other_attributes(tmp_path):
    from mmengine.logging.history_buffer import HistoryBuffer

    class _SneakyGetattr:

        def __reduce__(self):
            return (getattr, (HistoryBuffer, '__init__'))

    register_checkpoint_safe_globals()
    path = tmp_path / 'sneaky.pth'
    torch.save({'x': _SneakyGetattr()}, path)
    with pytest.raises(pickle.UnpicklingError, match='refuses getattr'):
        torch.load(path, weights_only=True)
