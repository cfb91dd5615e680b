"""Run a config under MMEngine's launchers on CPU (gloo) as on CUDA (nccl).

mmengine's ``pytorch`` and ``slurm`` launchers call
``torch.cuda.set_device`` before creating the process group, and its DDP
wrapper is given ``device_ids=[LOCAL_RANK]``; both fail on a machine
without a GPU. :func:`setup_distributed` prepares a config so that the same
command works on both: the backend follows the machine unless the config
names one, and on CPU the process group is created here (the Runner then
finds it initialised and skips its own) and DDP gets ``device_ids=None``.
"""
import datetime
import os
import subprocess

import torch
import torch.distributed as torch_dist
from mmengine.config import Config

_CPU_LAUNCHERS = ('pytorch', 'slurm')


def default_backend() -> str:
    """``'nccl'`` where CUDA is available, ``'gloo'`` elsewhere."""
    return 'nccl' if torch.cuda.is_available() else 'gloo'


def _slurm_environment() -> None:
    """Set torch's rendezvous variables from slurm's, as mmengine does."""
    proc_id = int(os.environ['SLURM_PROCID'])
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ['SLURM_NODELIST']
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f'scontrol show hostname {nodes} | head -n1')
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ['RANK'] = str(proc_id)


def setup_distributed(cfg: Config) -> Config:
    """Make ``cfg.launcher`` work on this machine; returns ``cfg``.

    - ``env_cfg.dist_cfg.backend`` defaults to :func:`default_backend`.
    - On a machine without CUDA, for the ``pytorch`` and ``slurm``
      launchers: the process group is initialised here with that backend,
      and ``model_wrapper_cfg`` gets ``device_ids=None`` (DDP on CPU).
    - ``nccl`` named on a machine without CUDA is refused with a
      ``ValueError`` before anything is built.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none':
        return cfg
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    backend = dist_cfg.setdefault('backend', default_backend())
    if torch.cuda.is_available() or launcher not in _CPU_LAUNCHERS:
        return cfg
    if backend == 'nccl':
        raise ValueError(
            "env_cfg.dist_cfg.backend='nccl' needs CUDA, and this machine "
            "has none: use 'gloo' (or leave the backend out of the config "
            'and it follows the machine)')
    if launcher == 'slurm':
        _slurm_environment()
    if not torch_dist.is_initialized():
        kwargs = {}
        if dist_cfg.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
        torch_dist.init_process_group(backend=backend, **kwargs)
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return cfg
