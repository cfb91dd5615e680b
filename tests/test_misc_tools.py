"""tools/misc/print_config.py and tools/analysis_tools/browse_dataset.py
on the demo config and tiny synthetic data."""
import os.path as osp
import re
import runpy

import mmcv
import numpy as np

from mmcc.visualization import ReIDVisualizer

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(
    ROOT, 'configs/cluster_contrast/'
    'cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py')
MARKET_NAME = re.compile(r'^(\d{4})_c(\d)s\d_\d{6}_\d{2}\.jpg$')


def _tool(*parts):
    return runpy.run_path(osp.join(ROOT, 'tools', *parts))


def test_print_config_prints_the_merged_config(capsys):
    cfg = _tool('misc', 'print_config.py')['main']([
        DEMO_CONFIG, '--cfg-options', 'train_cfg.max_epochs=3',
        'train_dataloader.dataset.data_root=/elsewhere/'
    ])
    out = capsys.readouterr().out
    assert cfg.train_cfg.max_epochs == 3
    # the override, next to what the demo config itself sets...
    assert re.search(r'train_cfg = dict\([^)]*max_epochs=3', out)
    assert "data_root='/elsewhere/'" in out
    assert 'iters_per_epoch=40' in out
    # ...and what it inherits from its _base_ files
    assert "type='PseudoLabelHook'" in out
    assert "type='ReIDVisualizer'" in out
    assert '_base_' not in out


def test_browse_dataset_draws_identities_by_camera(tiny_synthetic, tmp_path,
                                                   capsys):
    out = str(tmp_path / 'grid.png')
    rows, written = _tool('analysis_tools', 'browse_dataset.py')['main']([
        DEMO_CONFIG, '--out', out, '--num-ids', '3', '--per-id', '4',
        '--cfg-options', f'train_dataloader.dataset.data_root={tiny_synthetic}'
    ])
    assert written == out
    assert 'Market1501 train: 64 images, 8 identities; 3 of them' in \
        capsys.readouterr().out

    # 3 identities (the first three, a row each) x 4 images, cameras spread
    assert len(rows) == 3 and all(len(row) == 4 for row in rows)
    pids = [row[0]['gt_label'] for row in rows]
    assert pids == sorted(pids)
    for row in rows:
        assert len({i['gt_label'] for i in row}) == 1
        cams = [i['camid'] for i in row]
        assert cams == sorted(cams) and len(set(cams)) >= 2
        for info in row:  # what the file name says
            pid, cam = MARKET_NAME.match(osp.basename(
                info['img_path'])).groups()
            assert (int(pid), int(cam) - 1) == (info['gt_label'],
                                                info['camid'])

    # the picture: a 3 x 4 grid of cells, each an image over a caption
    geometry = ReIDVisualizer(name='grid_geometry', caption_height=30)
    image = mmcv.imread(out, channel_order='rgb')
    assert image.shape == (3 * geometry.cell_height, 4 * geometry.cell_width,
                           3)
    height, width = geometry.cell_size
    for r, row in enumerate(rows):
        for c, info in enumerate(row):
            y, x = geometry.cell_origin(r, c)
            b = geometry.border
            cell = image[y + b:y + b + height, x + b:x + b + width]
            expected = mmcv.imresize(
                mmcv.imread(info['img_path'], channel_order='rgb'),
                (width, height))
            assert np.abs(cell.astype(int) - expected).max() <= 1
            caption = image[y + height + 2 * b:(r + 1) * geometry.cell_height,
                            x:x + width + 2 * b]
            # two lines of dark text ("id P", "cam C") on white
            dark_rows = np.flatnonzero((caption.max(axis=2) < 128).any(1))
            assert len(dark_rows) > 10 and np.diff(dark_rows).max() > 1


def test_browse_dataset_query_split(tiny_synthetic, tmp_path):
    out = str(tmp_path / 'query.png')
    rows, _ = _tool('analysis_tools', 'browse_dataset.py')['main']([
        DEMO_CONFIG, '--split', 'query', '--out', out, '--num-ids', '50',
        '--cfg-options', f'test_dataloader.dataset.data_root={tiny_synthetic}'
    ])
    # every test identity, one query per camera it was seen in
    assert len(rows) == 4
    for row in rows:
        assert len({i['camid'] for i in row}) == len(row) >= 2
        assert all(i['is_query'] for i in row)
    geometry = ReIDVisualizer(name='query_geometry', caption_height=30)
    image = mmcv.imread(out)
    assert image.shape[0] == 4 * geometry.cell_height
    assert image.shape[1] == max(map(len, rows)) * geometry.cell_width
