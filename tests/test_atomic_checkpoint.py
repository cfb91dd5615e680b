"""A run killed while writing a checkpoint resumes from the last complete
one (AtomicCheckpointHook, the default runtime's checkpoint hook)."""
import os
import subprocess
import sys
import textwrap

import torch

# A toy run: 3 epochs, a checkpoint each, only the newest kept. With
# DIE_AT_EPOCH set, the process is killed (os._exit) halfway through
# writing that epoch's checkpoint, as a SIGKILL or a full disk would.
RUN = textwrap.dedent('''
    import os, sys
    import torch
    from mmengine.fileio import LocalBackend
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    from torch import nn
    from torch.utils.data import Dataset

    import mmcc.engine  # noqa: F401  (registers AtomicCheckpointHook)

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 1)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            out = self.linear(torch.stack(inputs))
            return dict(loss=out.pow(2).mean())

    class Data(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return dict(inputs=torch.full((2, ), float(i)))

    work_dir, die_at = sys.argv[1], int(sys.argv[2])
    put = LocalBackend.put

    def dying_put(self, obj, filepath):
        if f'epoch_{die_at}.pth' in str(filepath):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            os._exit(9)
        return put(self, obj, filepath)

    LocalBackend.put = dying_put
    Runner(
        model=Toy(),
        work_dir=work_dir,
        train_dataloader=dict(
            dataset=Data(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=4,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='Adam', lr=1e-3)),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        default_hooks=dict(
            checkpoint=dict(
                type='AtomicCheckpointHook', interval=1, max_keep_ckpts=1)),
        default_scope='mmcc',
        resume=True).train()
''')


def _run(work_dir, die_at):
    return subprocess.run(
        [sys.executable, '-c', RUN,
         str(work_dir), str(die_at)],
        capture_output=True,
        text=True)


def test_killed_mid_write_resumes_from_the_last_complete_checkpoint(tmp_path):
    killed = _run(tmp_path, die_at=2)
    assert killed.returncode == 9, killed.stderr[-2000:]
    # epoch 1 is still there (mmengine's own hook deleted it before writing
    # epoch 2) and last_checkpoint names it; epoch 2 is a hidden partial
    assert sorted(os.listdir(tmp_path)).count('epoch_1.pth') == 1
    assert not (tmp_path / 'epoch_2.pth').exists()
    last = (tmp_path / 'last_checkpoint').read_text()
    assert last.endswith('epoch_1.pth')
    assert torch.load(last, weights_only=False)['meta']['epoch'] == 1

    resumed = _run(tmp_path, die_at=0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert 'Load checkpoint from' in resumed.stdout + resumed.stderr
    assert (tmp_path / 'epoch_3.pth').exists()
    assert not (tmp_path / 'epoch_1.pth').exists()  # max_keep_ckpts=1
    assert (tmp_path / 'last_checkpoint').read_text().endswith('epoch_3.pth')
    assert not list(tmp_path.glob('.*.partial'))
