"""Draw a data set's identities by camera, to check how it was parsed.

    python tools/analysis_tools/browse_dataset.py CONFIG \
        [--split train|query|gallery] [--out FILE.png] [--num-ids N] \
        [--per-id M] [--cfg-options KEY=VALUE ...]

Builds the config's data set for the split (``train_dataloader``'s for
``train``, ``test_dataloader``'s for ``query`` and ``gallery``) and writes
one PNG: a row per identity (the first N in identity order), each with up
to M of its images spread over its cameras (taken camera by camera in
turn, then shown in camera order), every cell captioned with the identity
and the 0-based camera index the data set read from the file name. An
identity always in one camera, or a row of different people, is a parsing
problem at a glance.
"""
import argparse
import os.path as osp
from collections import defaultdict

import mmcv
from mmengine.config import Config, DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw a data set\'s identities by camera')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--split',
        choices=['train', 'query', 'gallery'],
        default='train',
        help='the data set split (default: train)')
    parser.add_argument(
        '--out',
        help='the PNG to write (default: '
        'work_dirs/browse_dataset/<config>_<split>.png)')
    parser.add_argument(
        '--num-ids',
        type=int,
        default=8,
        help='identities, one per row (default: 8)')
    parser.add_argument(
        '--per-id',
        type=int,
        default=8,
        help='images per identity, at most (default: 8)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. '
        'train_dataloader.dataset.data_root=data/market1501/')
    args = parser.parse_args(argv)
    if args.num_ids < 1 or args.per_id < 1:
        parser.error('--num-ids and --per-id must be >= 1')
    return args


def build_split(cfg, split):
    """The config's data set of ``split``, without its pipeline."""
    from mmcc.registry import DATASETS
    from mmcc.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    loader = 'train_dataloader' if split == 'train' else 'test_dataloader'
    dataset_cfg = cfg[loader].dataset.copy()
    dataset_cfg.update(split=split, pipeline=[])
    return DATASETS.build(dataset_cfg)


def pick_rows(infos, num_ids, per_id):
    """The data infos to draw: a row per identity, cameras spread.

    Args:
        infos (list[dict]): Data infos with ``img_path``, ``gt_label`` and
            ``camid``.
        num_ids (int): Rows: the first identities in identity order.
        per_id (int): Images per row, at most.

    Returns:
        list[list[dict]]: Each row's infos, in camera order.
    """
    by_id = defaultdict(lambda: defaultdict(list))
    for info in infos:
        by_id[info['gt_label']][info['camid']].append(info)
    rows = []
    for pid in sorted(by_id)[:num_ids]:
        cams = [
            sorted(by_id[pid][cam], key=lambda i: i['img_path'])
            for cam in sorted(by_id[pid])
        ]
        picked, depth = [], 0
        while len(picked) < per_id and any(len(c) > depth for c in cams):
            picked += [c[depth] for c in cams if len(c) > depth]
            depth += 1
        rows.append(
            sorted(picked[:per_id], key=lambda i: (i['camid'], i['img_path'])))
    return rows


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    dataset = build_split(cfg, args.split)
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    rows = pick_rows(infos, args.num_ids, args.per_id)

    from mmcc.visualization import ReIDVisualizer

    # two caption lines: identity, camera
    visualizer = ReIDVisualizer(name='browse_dataset', caption_height=30)
    grid = visualizer.compose_grid(
        [[i['img_path'] for i in row] for row in rows],
        [[f'id {i["gt_label"]}\ncam {i["camid"]}' for i in row]
         for row in rows])
    out = args.out or osp.join(
        'work_dirs', 'browse_dataset',
        f'{osp.splitext(osp.basename(args.config))[0]}_{args.split}.png')
    mmcv.imwrite(mmcv.rgb2bgr(grid), out)
    num_ids = len({i['gt_label'] for i in infos})
    print(f'{type(dataset).__name__} {args.split}: {len(infos)} images, '
          f'{num_ids} identities; {len(rows)} of them drawn in {out}')
    return rows, out


if __name__ == '__main__':
    main()
