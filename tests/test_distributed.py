"""Two processes through the launchers users run: gloo on CPU, nccl on a
machine with two GPUs (tools/analysis_tools/gpu_check.sh).

Each test starts real processes with ``torch.distributed.run``: the
launcher set-up (backend, process group, DDP without device ids) is the
tools' own, not a test double.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmcc.utils.host import free_port

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(
    ROOT, 'configs/cluster_contrast/'
    'cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py')

# A randomly initialised MobileNetV2 embeds every image nearly alike in eval
# mode (one cluster, a loss of 0, nothing to synchronise); a random
# ResNet-18 does not. The backbone is swapped the way the README says.
TEST_CONFIG = f"""
_base_ = {DEMO_CONFIG!r}
model = dict(
    backbone=dict(
        _delete_=True, type='mmpretrain.ResNet', depth=18,
        out_indices=(3, )))
custom_hooks = [
    dict(
        type='PseudoLabelHook',
        progress=False,
        cluster=dict(type='dbscan', eps=0.6, min_samples=4, k1=8, k2=2))
]
"""


@pytest.fixture(scope='module')
def tree(tiny_synthetic):
    return tiny_synthetic


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp('configs') / 'resnet18_tiny.py'
    path.write_text(TEST_CONFIG)
    return str(path)


def _data_options(tree):
    options = [
        f'{key}.dataset.data_root={tree}'
        for key in ('train_dataloader', 'cluster_dataloader', 'val_dataloader',
                    'test_dataloader')
    ]
    # no loader workers: a worker forked from a rank that runs gloo threads
    # can deadlock, and a test must not hang
    return options + [
        f'{key}.num_workers=0'
        for key in ('train_dataloader', 'cluster_dataloader', 'val_dataloader',
                    'test_dataloader')
    ] + ['train_dataloader.persistent_workers=False']


def _user_env():
    """A shell that never activated the project's virtual environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('VIRTUAL_ENV', 'PYTHON', 'PYTHONPATH')
    }
    env['PATH'] = '/usr/local/bin:/usr/bin:/bin'
    env['PORT'] = str(free_port())
    return env


def _run(cmd, env=None, timeout=300):
    env = dict(os.environ if env is None else env)
    if 0 < torch.cuda.device_count() < 2:
        # one GPU cannot host two nccl ranks: test the CPU (gloo) path
        env['CUDA_VISIBLE_DEVICES'] = ''
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_ranks_hold_identical_state(tree, config, tmp_path):
    """After training steps, both ranks have the same cluster memory,
    pseudo-labels and weights, from different batches."""
    _run([
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
        '--master_port',
        str(free_port()),
        osp.join(ROOT, 'tests', 'dist_train_worker.py'),
        str(tmp_path), config, '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', 'train_cfg.max_epochs=2',
        'train_cfg.val_interval=3', 'train_dataloader.batch_size=16',
        'train_dataloader.sampler.num_instances=4',
        'train_dataloader.sampler.iters_per_epoch=3'
    ] + _data_options(tree))
    ranks = [torch.load(tmp_path / f'rank{r}.pt') for r in (0, 1)]
    assert [r['world_size'] for r in ranks] == [2, 2]
    assert all(r['wrapped'] for r in ranks)  # DDP on CPU
    first, second = ranks
    # a real clustering (a single cluster would train nothing)
    assert first['memory'].shape[0] > 1
    assert torch.equal(first['memory'], second['memory'])
    assert torch.equal(first['head_labels'], second['head_labels'])
    assert torch.equal(first['sampler_labels'], first['head_labels'])
    assert torch.equal(second['sampler_labels'], second['head_labels'])
    assert first['params'].keys() == second['params'].keys()
    for name, value in first['params'].items():
        assert torch.equal(value, second['params'][name]), name
    # each rank trained 2 epochs x 3 batches of P x Z = 4 x 4, and the
    # ranks' batches differ
    for rank in ranks:
        assert [len(b) for b in rank['batches']] == [16] * 6
    assert first['batches'] != second['batches']


def test_dist_scripts_train_and_match_single_process(tree, tmp_path):
    """tools/dist_train.sh trains on 2 CPU processes from a shell without
    the virtual environment, overriding only train_dataloader.batch_size;
    tools/dist_test.sh then gives the single-process metrics."""
    work = tmp_path / 'work'
    _run(
        [
            'bash',
            osp.join(ROOT, 'tools',
                     'dist_train.sh'), DEMO_CONFIG, '2', '--work-dir',
            str(work), '--cfg-options', 'train_dataloader.batch_size=16',
            'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
            'default_hooks.checkpoint.interval=1',
            'train_dataloader.sampler.iters_per_epoch=2',
            'model.backbone.init_cfg=None'
        ] + _data_options(tree),
        env=_user_env())
    log = open(next(work.rglob('*.log'))).read()
    backend = 'nccl' if torch.cuda.device_count() >= 2 else 'gloo'
    assert f"'backend': '{backend}'" in log  # chosen by the machine
    checkpoint = str(work / 'epoch_1.pth')
    # The same arithmetic in both runs: one thread (torch.distributed.run
    # gives each rank one) and one image a batch, since a convolution's
    # float rounding depends on both, and the barely trained model's
    # near-tied distances would show a last-bit difference.
    options = [
        '--cfg-options', f'test_dataloader.dataset.data_root={tree}',
        'test_dataloader.num_workers=0', 'test_dataloader.batch_size=1',
        'model.backbone.init_cfg=None'
    ]
    one_thread = dict(_user_env(), OMP_NUM_THREADS='1')
    single = tmp_path / 'single.json'
    _run(
        [
            sys.executable,
            osp.join(ROOT, 'tools', 'test.py'), DEMO_CONFIG, checkpoint,
            '--work-dir',
            str(tmp_path / 'test1'), '--out',
            str(single)
        ] + options,
        env=one_thread)
    double = tmp_path / 'double.json'
    _run(
        [
            'bash',
            osp.join(ROOT, 'tools', 'dist_test.sh'), DEMO_CONFIG, checkpoint,
            '2', '--work-dir',
            str(tmp_path / 'test2'), '--out',
            str(double)
        ] + options,
        env=one_thread)
    single, double = json.loads(single.read_text()), json.loads(
        double.read_text())
    assert single.keys() == double.keys() and 'reid/mAP' in single
    for key, value in single.items():
        assert abs(value - double[key]) <= 1e-6, (key, value, double[key])


FAKE_SRUN = """#!/usr/bin/env bash
# Stands in for slurm's srun: one task, with the environment slurm gives
# it; the options before the command are dropped.
while [ $# -gt 0 ] && [ "$1" != "$PYTHON" ]; do shift; done
export SLURM_PROCID=0 SLURM_NTASKS=1 SLURM_LOCALID=0 SLURM_NODELIST=node0
export MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT
exec "$@"
"""


def test_slurm_scripts_launch_a_cpu_task(tree, tmp_path):
    """tools/slurm_{train,test}.sh through a stand-in srun: the slurm
    launcher's set-up (rank, world size, gloo, DDP on CPU) runs for real."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text(FAKE_SRUN)
    srun.chmod(0o755)
    env = _user_env()
    env.update(
        PATH=f'{bin_dir}:{env["PATH"]}',
        PYTHON=sys.executable,
        GPUS='1',
        GPUS_PER_NODE='0')
    work = tmp_path / 'work'
    _run(
        [
            'bash',
            osp.join(ROOT, 'tools',
                     'slurm_train.sh'), 'partition', 'job', DEMO_CONFIG,
            str(work), '--cfg-options', 'train_dataloader.batch_size=16',
            'train_cfg.max_epochs=1', 'train_cfg.val_interval=2',
            'default_hooks.checkpoint.interval=1',
            'train_dataloader.sampler.iters_per_epoch=1',
            'model.backbone.init_cfg=None'
        ] + _data_options(tree),
        env=env)
    log = open(next(work.rglob('*.log'))).read()
    assert "launcher: slurm" in log or "'launcher': 'slurm'" in log or \
        "launcher = 'slurm'" in log
    assert "'backend': 'gloo'" in log
    out = tmp_path / 'metrics.json'
    _run([
        'bash',
        osp.join(ROOT, 'tools',
                 'slurm_test.sh'), 'partition', 'job', DEMO_CONFIG,
        str(work / 'epoch_1.pth'), '--work-dir',
        str(tmp_path / 'test'), '--out',
        str(out), '--cfg-options', f'test_dataloader.dataset.data_root={tree}',
        'test_dataloader.num_workers=0', 'model.backbone.init_cfg=None'
    ],
         env=env)
    assert 0.0 <= json.loads(out.read_text())['reid/mAP'] <= 100.0
