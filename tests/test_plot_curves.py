"""Curves and TensorBoard: a tiny training run through
``train_and_report.py`` with the TensorBoard runtime, its event files, and
``plot_curves.py`` on its records (and on hand-written ones)."""
import json
import os
import os.path as osp
import runpy
import shutil
import subprocess
import sys

import mmcv
import numpy as np
import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(
    ROOT, 'configs/cluster_contrast/'
    'cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py')
TENSORBOARD_RUNTIME = osp.join(
    ROOT, 'configs/_base_/default_runtime_tensorboard.py')
PLOT_CURVES = osp.join(ROOT, 'tools/analysis_tools/plot_curves.py')


def _tiny_tensorboard_config(data_root, path):
    """The demo config for one tiny epoch, with the TensorBoard runtime's
    visualizer, written to ``path``."""
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.model.backbone.init_cfg = None  # no download in tests
    for key in ('train_dataloader', 'cluster_dataloader', 'val_dataloader',
                'test_dataloader'):
        cfg[key].dataset.data_root = data_root
        cfg[key].batch_size = 8
        cfg[key].num_workers = 0
        cfg[key].pop('persistent_workers', None)
    cfg.train_dataloader.sampler.update(num_instances=4, iters_per_epoch=3)
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 1
    # k1/k2 scaled to 64 training images
    cfg.custom_hooks[0].cluster.update(k1=10, k2=3)
    cfg.custom_hooks[0].progress = False
    cfg.visualizer = Config.fromfile(TENSORBOARD_RUNTIME).visualizer
    cfg.dump(str(path))
    return str(path)


@pytest.fixture(scope='module')
def reported_run(tiny_synthetic, tmp_path_factory):
    """``train_and_report.py`` on the tiny config: (work_dir, stdout)."""
    tmp = tmp_path_factory.mktemp('tensorboard_run')
    config = _tiny_tensorboard_config(tiny_synthetic, tmp / 'tiny.py')
    work_dir = str(tmp / 'work')
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    proc = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools/analysis_tools/train_and_report.py'), config,
        '--work-dir', work_dir
    ],
                          capture_output=True,
                          text=True,
                          env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work_dir, proc.stdout


def _run_folder(work_dir):
    (folder, ) = [
        name for name in os.listdir(work_dir)
        if osp.isdir(osp.join(work_dir, name, 'vis_data'))
    ]
    return folder


def test_tensorboard_event_files_hold_pseudo_and_reid_scalars(reported_run):
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    work_dir, _ = reported_run
    vis_data = osp.join(work_dir, _run_folder(work_dir), 'vis_data')
    events = [f for f in os.listdir(vis_data) if f.startswith('events.')]
    assert len(events) == 1
    accumulator = EventAccumulator(osp.join(vis_data, events[0]))
    accumulator.Reload()
    tags = accumulator.Tags()['scalars']
    for tag in ('pseudo/num_clusters', 'pseudo/num_outliers', 'pseudo/nmi',
                'pseudo/ari', 'reid/mAP', 'reid/top1', 'reid/mINP', 'loss'):
        assert tag in tags, (tag, tags)
    # the same values as mmengine's scalars.json
    with open(osp.join(vis_data, 'scalars.json')) as f:
        scalars = [json.loads(line) for line in f]
    # the demo config validates before training (epoch 0) and after it
    reid = [s for s in scalars if 'reid/mAP' in s]
    events = accumulator.Scalars('reid/mAP')
    assert [e.step for e in events] == [r['step'] for r in reid] == [0, 1]
    for event, entry in zip(events, reid):
        assert event.value == pytest.approx(entry['reid/mAP'], rel=1e-6)
    (event, ) = accumulator.Scalars('pseudo/num_clusters')
    assert event.step == 0


def test_ranked_lists_reach_tensorboard(reported_run, tmp_path):
    """tools/test.py --show-dir on the trained checkpoint, with the
    TensorBoard runtime: the pictures go to the PNG folder, the
    LocalVisBackend and TensorBoard (in the run's one event file)."""
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    work_dir, _ = reported_run
    config = osp.join(osp.dirname(work_dir), 'tiny.py')
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    test_dir, show_dir = tmp_path / 'test', tmp_path / 'show'
    runpy.run_path(osp.join(ROOT, 'tools', 'test.py'))['main']([
        config, checkpoint, '--work-dir',
        str(test_dir), '--show-dir',
        str(show_dir), '--show-num', '3', '--topk', '4'
    ])
    assert len(os.listdir(show_dir)) == 3
    vis_data = osp.join(test_dir, _run_folder(str(test_dir)), 'vis_data')
    assert sorted(os.listdir(osp.join(
        vis_data, 'vis_image'))) == [f'ranked_list_{i}.png' for i in range(3)]
    events = [f for f in os.listdir(vis_data) if f.startswith('events.')]
    assert len(events) == 1  # drawn before the runner closed the writer
    accumulator = EventAccumulator(osp.join(vis_data, events[0]))
    accumulator.Reload()
    images = accumulator.Images('ranked_list')
    assert [image.step for image in images] == [0, 1, 2]
    png = mmcv.imread(osp.join(vis_data, 'vis_image', 'ranked_list_0.png'))
    assert (images[0].height, images[0].width) == png.shape[:2]


def _check_png(path, min_colors=20):
    """A real picture: readable, not blank, several colours."""
    image = mmcv.imread(path, channel_order='rgb')
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 400
    colors = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colors) >= min_colors, (path, len(colors))
    # mostly white background, but lines and text on it
    white = (image == 255).all(axis=2).mean()
    assert 0.3 < white < 0.995, (path, white)
    return image


def test_train_and_report_plots_its_curves(reported_run):
    work_dir, stdout = reported_run
    curves = osp.join(work_dir, 'curves')
    expected = [
        osp.join(curves, 'pseudo_labels.png'),
        osp.join(curves, 'reid_accuracy.png')
    ]
    assert f'Curves: {expected[0]}, {expected[1]}' in stdout
    for path in expected:
        _check_png(path)


def test_plot_curves_reads_mmengine_scalars_like_the_report(
        reported_run, tmp_path):
    """Without report.json, plot_curves reads the run folder's scalars.json
    and log: the same epochs and values as train_and_report's report."""
    work_dir, _ = reported_run
    folder = _run_folder(work_dir)
    bare = tmp_path / 'bare'
    shutil.copytree(osp.join(work_dir, folder), bare / folder)
    tool = runpy.run_path(PLOT_CURVES)
    files = tool['main']([str(bare), '--out', str(tmp_path / 'out')])
    assert [osp.basename(f)
            for f in files] == ['pseudo_labels.png', 'reid_accuracy.png']
    for path in files:
        _check_png(path)

    from_scalars = tool['load_epochs'](str(bare))
    from_report = tool['load_epochs'](work_dir)  # its report.json
    # epoch 0: the validation before training; epoch 1: the pseudo-labels
    # it trained on and its validation
    assert sorted(from_scalars) == sorted(from_report) == [0, 1]
    for key in ('num_clusters', 'num_outliers', 'nmi', 'ari', 'reid/mAP',
                'reid/top1'):
        assert from_scalars[1][key] == pytest.approx(from_report[1][key])
    for key in ('reid/mAP', 'reid/top1'):
        assert from_scalars[0][key] == pytest.approx(from_report[0][key])
    for key in ('minutes_at_clustering', 'minutes_at_eval'):
        assert 0 <= from_scalars[1][key] < 10


def _write_run(work_dir, folder, entries, log_lines):
    vis_data = osp.join(work_dir, folder, 'vis_data')
    os.makedirs(vis_data)
    with open(osp.join(vis_data, 'scalars.json'), 'w') as f:
        f.writelines(json.dumps(e) + '\n' for e in entries)
    with open(osp.join(work_dir, folder, f'{folder}.log'), 'w') as f:
        f.writelines(line + '\n' for line in log_lines)


def _pseudo(step, clusters, nmi):
    return {
        'pseudo/num_clusters': clusters,
        'pseudo/num_outliers': 100 - clusters,
        'pseudo/nmi': nmi,
        'pseudo/ari': nmi / 2,
        'step': step
    }


def _val(epoch, mAP):
    return {'reid/mAP': mAP, 'reid/top1': mAP + 10, 'step': epoch}


def _log(stamp, text):
    return f'{stamp} - mmengine - INFO - {text}'


def test_plot_curves_joins_a_resumed_run(tmp_path, capsys):
    """Two run folders (trained, then resumed): one curve, and minutes of
    running time - the pause between the runs left out."""
    work_dir = str(tmp_path / 'run')
    _write_run(work_dir, '20240101_100000',
               [_pseudo(0, 10, 0.5),
                _val(1, 20.0),
                _pseudo(1, 20, 0.6)], [
                    _log('2024/01/01 10:00:00', 'Config: ...'),
                    _log('2024/01/01 10:01:00', 'Pseudo-labels: n=10'),
                    _log('2024/01/01 10:03:00',
                         'Epoch(val) [1][5/5]    reid/mAP: 20.0000'),
                    _log('2024/01/01 10:04:00', 'Pseudo-labels: n=20'),
                    _log('2024/01/01 10:05:00', 'killed'),
                ])
    # resumed an hour later from epoch 1: epoch 2 again, then 3
    _write_run(work_dir, '20240101_110000', [
        _pseudo(1, 22, 0.7),
        _val(2, 30.0),
        _pseudo(2, 25, 0.8),
        _val(3, 35.0)
    ], [
        _log('2024/01/01 11:00:00', 'Resumed'),
        _log('2024/01/01 11:01:00', 'Pseudo-labels: n=22'),
        _log('2024/01/01 11:02:00', 'Epoch(val) [2][5/5]    reid/mAP: 30'),
        _log('2024/01/01 11:03:00', 'Pseudo-labels: n=25'),
        _log('2024/01/01 11:04:00', 'Epoch(val) [3][5/5]    reid/mAP: 35'),
    ])
    tool = runpy.run_path(PLOT_CURVES)
    epochs = tool['load_epochs'](work_dir)
    assert sorted(epochs) == [1, 2, 3]
    assert [epochs[e]['num_clusters'] for e in (1, 2, 3)] == [10, 22, 25]
    assert [epochs[e]['reid/mAP'] for e in (1, 2, 3)] == [20.0, 30.0, 35.0]
    # 5 minutes in the first run, then the second run's own minutes
    assert [epochs[e]['minutes_at_eval'] for e in (1, 2, 3)] == [3, 7, 9]
    assert [epochs[e]['minutes_at_clustering'] for e in (1, 2, 3)] == [1, 6, 8]

    files = tool['main']([work_dir])
    assert f'Curves: {files[0]}, {files[1]}' in capsys.readouterr().out
    assert osp.dirname(files[0]) == osp.join(work_dir, 'curves')
    for path in files:
        _check_png(path)

    # report.json, when there is one, is what is plotted
    with open(osp.join(work_dir, 'report.json'), 'w') as f:
        json.dump({'epochs': {'4': {'num_clusters': 3, 'reid/mAP': 1.0}}}, f)
    assert tool['load_epochs'](work_dir) == {
        4: {
            'num_clusters': 3,
            'reid/mAP': 1.0
        }
    }


def test_plot_curves_with_nothing_logged(tmp_path, capsys):
    tool = runpy.run_path(PLOT_CURVES)
    assert tool['main']([str(tmp_path)]) == []
    assert 'Nothing to plot' in capsys.readouterr().out
