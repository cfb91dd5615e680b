"""Train an mmcc model: ``python tools/train.py CONFIG [--work-dir DIR]``.

Also used by ``mim train mmcc CONFIG`` and by ``tools/dist_train.sh`` /
``tools/slurm_train.sh`` (``--launcher pytorch|slurm``).
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from mmcc.engine.optimizers import amp_optim_wrapper
from mmcc.utils import register_all_modules, setup_distributed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a re-ID model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or, without a path, from the '
        'latest checkpoint in the work directory')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision: float16 on CUDA, bfloat16 on CPUs with '
        'native bfloat16 (refused on other CPUs)')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate during training')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. train_cfg.max_epochs=2')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg, args):
    """Apply the command line to the config."""
    cfg.launcher = args.launcher
    # options first: they may name the validation parts --no-validate drops
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.amp:
        # CUDA float16, or bfloat16 on a CPU that has it natively; refused
        # here, before anything is built, on any other CPU
        cfg.optim_wrapper = amp_optim_wrapper(cfg.optim_wrapper)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def build_runner(argv=None) -> Runner:
    """The Runner that ``tools/train.py ARGV`` trains with."""
    args = parse_args(argv)
    register_all_modules(init_default_scope=False)
    cfg = setup_distributed(merge_args(Config.fromfile(args.config), args))
    return Runner.from_cfg(cfg)


def main(argv=None):
    runner = build_runner(argv)
    runner.train()
    return runner


if __name__ == '__main__':
    main()
