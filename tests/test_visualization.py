"""Ranked lists: the ranking function, the ReIDVisualizer's picture, and
``tools/test.py --show-dir`` end to end on tiny synthetic data."""
import glob
import os.path as osp
import re
import runpy

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmcc.evaluation.functional import rank_metrics, ranked_lists
from mmcc.registry import MODELS, VISUALIZERS
from mmcc.utils import register_all_modules
from mmcc.visualization import ReIDVisualizer

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(
    ROOT, 'configs/cluster_contrast/'
    'cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py')
GREEN, RED, BLACK = (0, 255, 0), (255, 0, 0), (0, 0, 0)

# (identity, camera) of a hand-made gallery; -1 is junk, 0 a distractor
GALLERY_IDS = np.array([1, 2, 1, -1, 0, 1, 3, 1])
GALLERY_CAMS = np.array([0, 1, 1, 2, 1, 2, 0, 3])


def test_ranked_lists_leave_out_what_the_protocol_ignores():
    distmat = np.array([
        # query id 1, cam 0: g0 (same id and camera) and g3 (junk) are
        # the closest but left out; the distractor g4 stays, as a mismatch
        [0.1, 0.2, 0.3, 0.05, 0.25, 0.5, 0.6, 0.9],
        # query id 3, cam 1: g6 (cam 0) ties with g1 and g2 at 0.2; the
        # mismatches come first, as the metric counts the tie
        [0.5, 0.2, 0.2, 0.0, 0.9, 0.7, 0.2, 0.8],
    ])
    first, second = ranked_lists(
        distmat, [1, 3], GALLERY_IDS, [0, 1], GALLERY_CAMS, topk=4)
    assert first.indices.tolist() == [1, 4, 2, 5]
    assert first.matches.tolist() == [False, False, True, True]
    np.testing.assert_allclose(first.distances, [0.2, 0.25, 0.3, 0.5])
    assert second.indices.tolist() == [1, 2, 6, 0]
    assert second.matches.tolist() == [False, False, True, False]

    # fewer valid entries than k: all of them; a subset of the queries,
    # in the order asked; tensors accepted
    (only, ) = ranked_lists(
        torch.as_tensor(distmat), [1, 3],
        GALLERY_IDS, [0, 1],
        GALLERY_CAMS,
        topk=50,
        queries=[1])
    assert only.indices.tolist() == [1, 2, 6, 0, 5, 7, 4]
    assert only.indices.dtype == np.int64

    with pytest.raises(ValueError, match='topk'):
        ranked_lists(distmat, [1, 3], GALLERY_IDS, [0, 1], GALLERY_CAMS, 0)
    with pytest.raises(ValueError, match='NaN'):
        ranked_lists(
            np.full((2, 8), np.nan), [1, 3], GALLERY_IDS, [0, 1], GALLERY_CAMS)
    with pytest.raises(ValueError, match='one entry per'):
        ranked_lists(distmat, [1], GALLERY_IDS, [0], GALLERY_CAMS)


def test_ranked_lists_agree_with_the_metrics_top1():
    """On random data with many ties: a query is a top-1 hit of
    rank_metrics exactly when its list starts with a match strictly closer
    than the next entry; and the lists are the sorted valid entries."""
    rng = np.random.default_rng(0)
    num_query, num_gallery = 60, 40
    gallery_ids = rng.integers(-1, 6, num_gallery)
    gallery_cams = rng.integers(0, 3, num_gallery)
    query_ids = rng.integers(1, 6, num_query)
    query_cams = rng.integers(0, 3, num_query)
    distmat = rng.integers(0, 6, (num_query, num_gallery)).astype(float)
    lists = ranked_lists(
        distmat, query_ids, gallery_ids, query_cams, gallery_cams, topk=5)
    hits = []
    for q, ranked in enumerate(lists):
        valid = (gallery_ids != -1) & ~((gallery_ids == query_ids[q]) &
                                        (gallery_cams == query_cams[q]))
        assert len(ranked.indices) == min(5, valid.sum())
        assert valid[ranked.indices].all()
        assert (np.diff(ranked.distances) >= 0).all()
        np.testing.assert_array_equal(ranked.distances,
                                      np.sort(distmat[q, valid])[:5])
        np.testing.assert_array_equal(
            ranked.matches, gallery_ids[ranked.indices] == query_ids[q])
        if (gallery_ids[valid] == query_ids[q]).any():
            dist = ranked.distances
            hits.append(ranked.matches[0]
                        and (len(dist) == 1 or dist[1] > dist[0]))
    expected = rank_metrics(distmat, query_ids, gallery_ids, query_cams,
                            gallery_cams)['top1']
    assert len(hits) > 30 and np.mean(hits) == pytest.approx(expected)


def _cell_border(image, visualizer, col, gap):
    """The border pixels (top row, left column) of a cell of row 0."""
    y, x = visualizer.cell_origin(0, col, gap)
    height, width = visualizer.cell_size
    b = visualizer.border
    top = image[y, x:x + width + 2 * b]
    left = image[y:y + height + 2 * b, x]
    return np.concatenate([top, left])


def test_visualizer_draws_the_ranked_list_for_every_backend(tmp_path):
    register_all_modules()
    visualizer = VISUALIZERS.build(
        dict(
            type='ReIDVisualizer',
            name='test_ranked_list',
            vis_backends=[dict(type='LocalVisBackend')],
            save_dir=str(tmp_path)))
    assert isinstance(visualizer, ReIDVisualizer)
    query = np.full((256, 128, 3), 200, np.uint8)
    gallery = [np.full((100, 50, 3), 40 * i, np.uint8) for i in range(4)]
    matches = [True, False, False, True]
    out_file = str(tmp_path / 'show' / 'query.png')
    image = visualizer.add_ranked_list(
        'ranked_list',
        query,
        gallery,
        matches, [0.1, 0.25, 0.5, 1.75],
        step=7,
        out_file=out_file)

    gap = visualizer.query_gap
    assert image.shape == (visualizer.cell_height,
                           5 * visualizer.cell_width + gap, 3)
    assert (_cell_border(image, visualizer, 0, gap) == BLACK).all()
    for col, match in enumerate(matches, start=1):
        border = _cell_border(image, visualizer, col, gap)
        assert (border == (GREEN if match else RED)).all(), col
        # the image itself, resized, inside the border
        y, x = visualizer.cell_origin(0, col, gap)
        b = visualizer.border
        inside = image[y + b:y + b + visualizer.cell_size[0],
                       x + b:x + b + visualizer.cell_size[1]]
        assert (inside == 40 * (col - 1)).all()
        # a caption (the distance) under it: dark text on white
        caption = image[y + visualizer.cell_size[0] + 2 * b:,
                        x:x + 2 * b + visualizer.cell_size[1]]
        assert (caption.max(axis=2) < 128).sum() > 10

    # the same picture in the out file and in the LocalVisBackend's folder
    for path in (out_file,
                 str(tmp_path / 'vis_data' / 'vis_image' /
                     'ranked_list_7.png')):
        np.testing.assert_array_equal(
            mmcv.imread(path, channel_order='rgb'), image)


def test_default_runtime_builds_the_reid_visualizer():
    cfg = Config.fromfile(osp.join(ROOT, 'configs/_base_/default_runtime.py'))
    assert cfg.visualizer.type == 'ReIDVisualizer'
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/_base_/default_runtime_tensorboard.py'))
    assert cfg.visualizer.type == 'ReIDVisualizer'
    assert [b['type'] for b in cfg.visualizer.vis_backends
            ] == ['LocalVisBackend', 'TensorboardVisBackend']


def _random_checkpoint(path):
    """A randomly initialised demo model's checkpoint."""
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.model.backbone.init_cfg = None
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


def _test_argv(data_root, checkpoint, work_dir, *extra):
    return [
        DEMO_CONFIG, checkpoint, '--work-dir',
        str(work_dir), *extra, '--cfg-options', 'model.backbone.init_cfg=None',
        f'test_dataloader.dataset.data_root={data_root}',
        'test_dataloader.num_workers=0', 'test_dataloader.batch_size=8'
    ]


def test_tools_test_show_dir_draws_ranked_lists(tiny_synthetic, tmp_path):
    torch.set_num_threads(1)
    checkpoint = _random_checkpoint(tmp_path / 'random.pth')
    test_main = runpy.run_path(osp.join(ROOT, 'tools', 'test.py'))['main']
    plain = test_main(
        _test_argv(tiny_synthetic, checkpoint, tmp_path / 'plain'))

    show_dir = tmp_path / 'show'
    metrics = test_main(
        _test_argv(tiny_synthetic, checkpoint, tmp_path / 'work', '--show-dir',
                   str(show_dir), '--show-num', '100', '--topk', '5'))
    # keeping the ranking changes no result
    assert metrics == plain

    files = sorted(glob.glob(str(show_dir / '*.png')))
    queries = sorted(glob.glob(osp.join(tiny_synthetic, 'query', '*.jpg')))
    assert len(files) == len(queries) > 3  # --show-num > queries: all
    # named by rank in the query set and the query's file name
    assert [re.sub(r'^\d{4}_', '', osp.basename(f))[:-4]
            for f in files] == [osp.basename(q)[:-4] for q in queries]

    visualizer = ReIDVisualizer(name='geometry')
    gap = visualizer.query_gap
    first_green = []
    for path in files:
        image = mmcv.imread(path, channel_order='rgb')
        assert image.shape == (visualizer.cell_height,
                               6 * visualizer.cell_width + gap, 3)
        assert (_cell_border(image, visualizer, 0, gap) == BLACK).all()
        colors = []
        for col in range(1, 6):
            border = _cell_border(image, visualizer, col, gap)
            is_green, is_red = (border == GREEN).all(), (border == RED).all()
            assert is_green or is_red, (path, col)
            colors.append(is_green)
        first_green.append(colors[0])
    # every synthetic query has positives in another camera, and float
    # distances do not tie: the share of lists starting green is top-1
    assert 100 * np.mean(first_green) == pytest.approx(metrics['reid/top1'])

    # the visualizer's LocalVisBackend received the same pictures
    backend = glob.glob(
        str(tmp_path / 'work' / '*' / 'vis_data' / 'vis_image' / '*.png'))
    assert len(backend) == len(files)
