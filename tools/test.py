"""Evaluate a re-ID model: ``python tools/test.py CONFIG [CHECKPOINT]``.

Prints mAP, CMC top-1/5/10 and mINP of the query split against the gallery.
Without a checkpoint the model is evaluated as its config initialises it
(e.g. ImageNet weights through the backbone's ``init_cfg``).

``--show-dir DIR`` also draws the ranked lists of the first ``--show-num``
queries (top ``--topk`` gallery images, green/red borders for right/wrong
identities) into ``DIR``, one PNG per query, and hands them to the
visualizer's backends (``vis_data/vis_image``, TensorBoard...).
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.dist import is_main_process
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from mmcc.engine.hooks import RankedListHook
from mmcc.utils import register_all_modules, setup_distributed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a re-ID model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint', nargs='?', default=None, help='checkpoint file')
    parser.add_argument('--work-dir', help='where to save the logs')
    parser.add_argument(
        '--out', help='also dump the metrics to this json file')
    parser.add_argument(
        '--rerank',
        action='store_true',
        help='k-reciprocal re-ranking of the query-gallery distance')
    parser.add_argument(
        '--show-dir',
        help='draw the ranked lists of the first --show-num queries into '
        'this directory, one PNG per query')
    parser.add_argument(
        '--show-num',
        type=int,
        default=20,
        help='how many queries --show-dir draws (default: 20)')
    parser.add_argument(
        '--topk',
        type=int,
        default=10,
        help='gallery images per ranked list (default: 10)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. test_dataloader.batch_size=32')
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
    cfg.launcher = args.launcher
    # options first: they may name the training parts dropped below
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    # testing needs none of the training parts a full config carries
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper',
                'param_scheduler', 'val_dataloader', 'val_cfg',
                'val_evaluator'):
        cfg[key] = None
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.checkpoint is not None:
        cfg.load_from = args.checkpoint
    if args.rerank:
        evaluators = cfg.test_evaluator if isinstance(
            cfg.test_evaluator, list) else [cfg.test_evaluator]
        for evaluator in evaluators:
            evaluator['rerank'] = True
    return cfg


def main(argv=None):
    args = parse_args(argv)
    register_all_modules(init_default_scope=False)
    cfg = setup_distributed(merge_args(Config.fromfile(args.config), args))
    runner = Runner.from_cfg(cfg)
    if cfg.get('load_from', None) is None:
        # No checkpoint: evaluate the model as its config initialises it
        # (Runner.test itself never calls init_weights).
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        model.init_weights()
        runner.logger.info('No checkpoint given: evaluating the model with '
                           'the weights its init_cfg provides')
    if args.show_dir:
        show = RankedListHook(args.show_dir, args.show_num, args.topk)
        runner.register_hook(show)
    metrics = runner.test()
    lines = [f'{k}: {v:.2f}' for k, v in metrics.items()]
    runner.logger.info('Re-ID results (%): ' + ', '.join(lines))
    if args.out and is_main_process():
        import json
        with open(args.out, 'w') as f:
            json.dump(metrics, f, indent=2)
    if args.show_dir and is_main_process():
        print(f'Ranked lists of {len(show.files)} queries (top '
              f'{args.topk}): {args.show_dir}')
    return metrics


if __name__ == '__main__':
    main()
