"""The ablation study: its configs, two iterations of each, and its runner.

Every config of ``configs/cluster_contrast/ablations`` loads, differs from
the main arm in exactly what its name says, and trains two iterations on a
tiny Market-1501 tree (``tests/reid_fixtures.py``) with the Runner. The
runner ``tools/analysis_tools/run_ablations.py`` is fed finished, unfinished
and missing work directories (hand-written in the format mmengine writes,
and one real tiny run) and must write the report's tables and curves.
"""
import glob
import importlib.util
import json
import os
import os.path as osp
import sys
from datetime import datetime, timedelta

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import reid_fixtures  # noqa: E402

from mmcc.utils import register_all_modules  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
ABLATIONS = osp.join(ROOT, 'configs', 'cluster_contrast', 'ablations')
CPU_RECIPE = osp.join(
    ROOT, 'configs', 'cluster_contrast',
    'cluster-contrast_mobilenetv2_dbscan_1xb128-36e_market1501-trainsplit.py')
STEM = 'cluster-contrast_mobilenetv2_{}-12e_market1501-trainsplit{}.py'
MAIN = STEM.format('dbscan_1xb128', '')
MISSING = object()  # a key the arm drops


def _pipelines(scale, crop, padding):
    """The flattened keys of the 256x128 arm's pipelines."""
    out = dict(img_scale=scale, crop_size=crop)
    for prefix in ('train_pipeline', 'train_dataloader.dataset.pipeline'):
        out.update({
            f'{prefix}.1.scale': scale,
            f'{prefix}.3.crop_size': crop,
            f'{prefix}.3.padding': padding
        })
    for prefix in ('test_pipeline', 'cluster_dataloader.dataset.pipeline',
                   'val_dataloader.dataset.pipeline',
                   'test_dataloader.dataset.pipeline'):
        out[f'{prefix}.1.scale'] = scale
    return out


HOOK = 'custom_hooks.0.cluster.'
# config -> {flattened key: value in the arm} for every key that differs
# from the main arm
ARM_DIFFS = {
    MAIN: {},
    STEM.format('dbscan_1xb128', '_instance-memory'): {
        'model.head.type': 'InstanceMemoryHead',
        'model.head.momentum': 0.2,
        'model.head.update_mode': MISSING,
    },
    STEM.format('dbscan_1xb128', '_momentum-0'): {
        'model.head.momentum': 0.0
    },
    STEM.format('dbscan_1xb128', '_momentum-0.5'): {
        'model.head.momentum': 0.5
    },
    STEM.format('dbscan_1xb128', '_momentum-0.9'): {
        'model.head.momentum': 0.9
    },
    STEM.format('dbscan-hard_1xb128', ''): {
        'model.head.update_mode': 'hard'
    },
    STEM.format('infomap_1xb128', ''): {
        HOOK + 'type': 'infomap',
        HOOK + 'k1': 15,
        HOOK + 'k2': 4,
        HOOK + 'min_sim': 0.5,
        HOOK + 'eps': MISSING,
        HOOK + 'min_samples': MISSING,
    },
    STEM.format('hdbscan_1xb128', ''): {
        HOOK + 'type': 'hdbscan',
        HOOK + 'min_cluster_size': 4,
        HOOK + 'eps': MISSING,
        HOOK + 'min_samples': MISSING,
    },
    STEM.format('dbscan_1xb128', '_gem'): {
        'model.neck.pooling.type': 'mmpretrain.GeneralizedMeanPooling',
        'model.neck.pooling.p': 3.0,
        'model.neck.pooling.p_trainable': True,
    },
    STEM.format('dbscan_1xb64', '_8x8'): {
        'train_dataloader.batch_size': 64
    },
    STEM.format('dbscan_1xb128', '_32x4'): {
        'train_dataloader.sampler.num_instances': 4
    },
    STEM.format('dbscan_1xb128', '_256x128'):
    _pipelines((128, 256), (256, 128), 10),
    # the only arm on another schedule: 128x64 at 256x128's minutes
    # (a file name of its own: mim finds configs by name alone)
    'cluster-contrast_mobilenetv2_dbscan_1xb128-36e_market1501-trainsplit'
    '_equal-minutes.py': {
        'train_cfg.max_epochs': 36,
        'param_scheduler.milestones': [27],
    },
    STEM.format('dbscan_1xb128', '_eps-0.6'): {
        HOOK + 'eps': 0.6
    },
    STEM.format('dbscan_1xb128', '_no-frozen-stages'): {
        'model.backbone.frozen_stages': -1
    },
}
CONFIGS = sorted(ARM_DIFFS)
LOADERS = ('train_dataloader', 'cluster_dataloader', 'val_dataloader',
           'test_dataloader')


def _load_runner_module():
    path = osp.join(ROOT, 'tools', 'analysis_tools', 'run_ablations.py')
    spec = importlib.util.spec_from_file_location('run_ablations', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_ablations = _load_runner_module()


def _flatten(value, prefix=''):
    """{dotted key: leaf}; lists of dicts are indexed, other lists leaves."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f'{prefix}.{key}' if prefix else key))
        return out
    if isinstance(value, (list, tuple)) and any(
            isinstance(item, (dict, list, tuple)) for item in value):
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, f'{prefix}.{i}'))
        return out
    return {prefix: value}


def _diff(cfg, reference):
    ours, theirs = _flatten(cfg.to_dict()), _flatten(reference.to_dict())
    return {
        key: ours.get(key, MISSING)
        for key in set(ours) | set(theirs)
        if ours.get(key, MISSING) != theirs.get(key, MISSING)
    }


# --------------------------------------------------------------------------
# The configs as written
# --------------------------------------------------------------------------
def test_the_folder_holds_exactly_the_runner_arms_and_the_readme_lists_them():
    found = sorted(
        osp.basename(p) for p in glob.glob(osp.join(ABLATIONS, '*.py')))
    assert found == CONFIGS
    assert sorted({osp.basename(a.config)
                   for a in run_ablations.ARMS}) == CONFIGS
    names = [a.name for a in run_ablations.study_arms((2, 3))]
    assert len(set(names)) == len(names) == len(CONFIGS) + 2
    assert names[-2:] == ['main-seed2', 'main-seed3']
    with open(osp.join(ABLATIONS, 'README.md')) as f:
        readme = f.read()
    for config in CONFIGS:
        assert f'`{config}`' in readme, config
    for arm in run_ablations.ARMS:
        assert f'`{arm.name}`' in readme, arm.name


def test_main_arm_is_the_cpu_recipe_on_the_short_schedule():
    main = Config.fromfile(osp.join(ABLATIONS, MAIN))
    assert _diff(main, Config.fromfile(CPU_RECIPE)) == {
        'train_cfg.max_epochs': 12,
        'train_cfg.val_interval': 3,
        'param_scheduler.milestones': [9],
        'default_hooks.logger.interval': 10,
        'default_hooks.checkpoint.interval': -1,
        'default_hooks.checkpoint.save_last': True,
        'default_hooks.checkpoint.save_best': None,
    }
    # the recipe itself, as the issue describes the main arm
    assert main.train_dataloader.sampler.iters_per_epoch == 50
    assert main.default_hooks.checkpoint.max_keep_ckpts == 1
    head = main.model.head
    assert head.type == 'ClusterMemoryHead' and head.momentum == 0.1
    assert head.update_mode == 'mean'
    assert dict(main.custom_hooks[0].cluster) == dict(
        type='dbscan', eps=0.5, min_samples=4, k1=30, k2=6)
    assert main.model.neck.pooling.type == 'mmpretrain.GlobalAveragePooling'
    assert main.train_dataloader.batch_size == 128
    assert main.train_dataloader.sampler.num_instances == 8
    assert main.model.backbone.frozen_stages == 2
    assert main.model.backbone.init_cfg.type == 'Pretrained'
    crops = [
        t for t in main.train_dataloader.dataset.pipeline
        if t.type == 'mmpretrain.RandomCrop'
    ]
    assert [tuple(t.crop_size) for t in crops] == [(128, 64)]
    assert main.randomness.seed == 1


def test_default_cpu_recipe_trains_as_the_measured_256x128_arm():
    """The 256x128 CPU recipe is the input-256x128 arm as a user's config:
    the same training, evaluated and saved every 6 epochs instead of only
    at the end and every 3, so the arm's measured mAP and minutes hold."""
    recipe = Config.fromfile(
        osp.join(
            ROOT, 'configs', 'cluster_contrast',
            'cluster-contrast_mobilenetv2_dbscan_1xb128-12e_'
            'market1501-trainsplit-256x128.py'))
    arm = Config.fromfile(
        osp.join(ABLATIONS, STEM.format('dbscan_1xb128', '_256x128')))
    assert _diff(recipe, arm) == {
        'train_cfg.val_interval': 6,
        'default_hooks.logger.interval': 25,
        'default_hooks.checkpoint.interval': 6,
        'default_hooks.checkpoint.save_last': MISSING,
        'default_hooks.checkpoint.save_best': 'reid/mAP',
    }


@pytest.mark.parametrize('config', CONFIGS)
def test_arm_differs_from_main_only_in_what_its_name_says(config):
    main = Config.fromfile(osp.join(ABLATIONS, MAIN))
    cfg = Config.fromfile(osp.join(ABLATIONS, config))
    assert _diff(cfg, main) == ARM_DIFFS[config]


# --------------------------------------------------------------------------
# Two iterations of each arm
# --------------------------------------------------------------------------
# 4 training identities x 4 images, 2 test identities, 3 cameras
SOURCE = dict(num_train_ids=4, num_test_ids=2, images_per_id=4, num_cams=3)
NUM_TRAIN = 16
# Neighbourhoods and densities scaled to 16 random-weight embeddings (see
# test_paper_configs.py): several clusters, so the loss is not trivially 0.
# Random MobileNetV2 embeddings are all alike (cosine 0.95-0.98), so
# min_sim cannot cut Infomap's graph: its kNN lists are made short instead
# (k1=5 gave one community, k1=3 three).
TINY_CLUSTER = dict(
    dbscan=dict(k1=6, k2=2, min_samples=2),
    infomap=dict(k1=3, k2=1),
    hdbscan=dict(k1=6, k2=2, min_cluster_size=2))


@pytest.fixture(scope='module')
def tiny_market(tmp_path_factory):
    base = tmp_path_factory.mktemp('ablation_tree')
    source = reid_fixtures.make_synthetic_source(
        str(base / 'source'), **SOURCE)
    return reid_fixtures.make_reid_fixture(
        'market1501', str(base / 'market1501'), source=source)


def _tiny_cfg(config, root, work_dir, validate=False):
    """The arm as written, on the tiny tree, for two iterations.

    Changed: data roots and loader sizes, the schedule's length, the
    logging interval, the clustering's neighbourhood sizes, and the
    backbone's initialisation (no ImageNet file on a fresh clone; Kaiming
    fan_in keeps MobileNetV2's random embeddings apart, see
    test_paper_configs.py). P x Z becomes 2 x 2 for every arm: the batch
    arms' layouts are checked as written above.
    """
    cfg = Config.fromfile(osp.join(ABLATIONS, config))
    cfg.work_dir = work_dir
    cfg.model.backbone.init_cfg = [
        dict(type='Kaiming', layer='Conv2d', mode='fan_in'),
        dict(type='Constant', layer='_BatchNorm', val=1)
    ]
    for key in LOADERS:
        cfg[key].dataset.data_root = root
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
    cfg.train_dataloader.batch_size = 4
    cfg.train_dataloader.sampler.update(num_instances=2, iters_per_epoch=2)
    if validate:
        cfg.train_cfg.update(max_epochs=1, val_interval=1)
    else:
        cfg.train_cfg.update(max_epochs=1, val_begin=2)
    cfg.default_hooks.logger.interval = 1
    hook = cfg.custom_hooks[0]
    hook.progress = False
    hook.cluster.update(TINY_CLUSTER[hook.cluster.type])
    return cfg


def _train(cfg):
    register_all_modules(init_default_scope=False)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def _check_trained(runner, work_dir):
    head = runner.model.head
    assert head.num_clusters >= 2  # a real clustering, a real loss
    assert head.sample_labels.shape == (NUM_TRAIN, )
    losses = np.asarray(runner.message_hub.log_scalars['train/loss'].data[0])
    assert losses.shape == (2, ) and np.isfinite(losses).all()
    assert (losses > 0).all()
    assert runner.iter == 2 and runner.epoch == 1
    # the one checkpoint, written at the end
    assert [osp.basename(p) for p in glob.glob(osp.join(work_dir, '*.pth'))
            ] == ['epoch_1.pth']


@pytest.fixture(scope='module')
def main_run(tiny_market, tmp_path_factory, single_thread):
    """The main arm's two iterations, evaluated: (runner, work_dir)."""
    work_dir = str(tmp_path_factory.mktemp('ablation_main') / 'main')
    runner = _train(_tiny_cfg(MAIN, tiny_market.root, work_dir, validate=True))
    return runner, work_dir


def test_main_arm_trains_on_fixture(main_run):
    runner, work_dir = main_run
    _check_trained(runner, work_dir)
    assert type(runner.model.head).__name__ == 'ClusterMemoryHead'


@pytest.mark.parametrize('config', [c for c in CONFIGS if c != MAIN])
def test_arm_trains_on_fixture(config, tiny_market, tmp_path, single_thread):
    """Two iterations of the arm. The instance-memory arm needs
    PseudoLabelHook to hand the head the clustering pass's features
    (``needs_features``)."""
    runner = _train(_tiny_cfg(config, tiny_market.root, str(tmp_path)))
    _check_trained(runner, str(tmp_path))
    model, diffs = runner.model, ARM_DIFFS[config]
    head = model.head
    if diffs.get('model.head.type') == 'InstanceMemoryHead':
        assert type(head).__name__ == 'InstanceMemoryHead'
        assert head.momentum == 0.2
        assert head.instance_memory.shape == (NUM_TRAIN, head.feat_dim)
    else:
        assert type(head).__name__ == 'ClusterMemoryHead'
        assert head.momentum == diffs.get('model.head.momentum', 0.1)
        assert head.update_mode == diffs.get('model.head.update_mode', 'mean')
    if 'model.neck.pooling.type' in diffs:
        assert type(model.neck.pooling).__name__ == 'GeneralizedMeanPooling'
    assert model.backbone.frozen_stages == diffs.get(
        'model.backbone.frozen_stages', 2)
    hw = diffs.get('crop_size', (128, 64))
    batch = next(iter(runner.train_dataloader))
    assert tuple(batch['inputs'][0].shape) == (3, ) + hw


# --------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------
def _fake_run(work_dir,
              maps,
              top1s,
              minutes_per_epoch,
              clusters,
              nmi,
              step_times,
              head_shapes,
              val_interval=3,
              max_epochs=12):
    """Records in mmengine's format: a timestamped run folder with its log
    and vis_data/scalars.json, and the final checkpoint's head buffers.

    ``maps``/``top1s`` are the evaluations at every ``val_interval``-th
    epoch up to ``max_epochs`` (a shorter list: the run stopped).
    """
    start = datetime(2025, 3, 1, 9, 0, 0)
    stamp = start.strftime('%Y%m%d_%H%M%S')
    run = osp.join(work_dir, stamp)
    os.makedirs(osp.join(run, 'vis_data'))
    scalars, log = [], []

    def at(minutes):
        return (start + timedelta(minutes=minutes)
                ).strftime('%Y/%m/%d %H:%M:%S') + ' - mmengine - INFO - '

    epochs = min(max_epochs, len(maps) * val_interval)
    for epoch in range(epochs):
        t0 = epoch * minutes_per_epoch
        scalars.append({
            'pseudo/num_clusters': clusters[epoch],
            'pseudo/num_outliers': 100 + epoch,
            'pseudo/nmi': nmi[epoch],
            'pseudo/nmi_all': nmi[epoch] - 0.1,
            'step': epoch
        })
        log.append(
            at(t0 + 0.5) + 'Pseudo-labels: num_clusters='
            f'{clusters[epoch]}, num_outliers={100 + epoch}')
        for i, t in enumerate(step_times):
            step = epoch * len(step_times) + i + 1
            scalars.append({
                'lr': 0.00035,
                'data_time': 0.01,
                'loss': 5.0,
                'acc': 0.5,
                'time': t,
                'epoch': epoch + 1,
                'iter': step,
                'step': step
            })
        if (epoch + 1) % val_interval == 0:
            k = (epoch + 1) // val_interval - 1
            scalars.append({
                'reid/mAP': maps[k],
                'reid/top1': top1s[k],
                'data_time': 0.02,
                'time': 0.3,
                'step': epoch + 1
            })
            log.append(
                at(t0 + minutes_per_epoch) +
                f'Epoch(val) [{epoch + 1}][10/10]    reid/mAP: {maps[k]:.4f}'
                f'  reid/top1: {top1s[k]:.4f}')
    with open(osp.join(run, 'vis_data', 'scalars.json'), 'w') as f:
        f.write('\n'.join(json.dumps(s) for s in scalars) + '\n')
    with open(osp.join(run, f'{stamp}.log'), 'w') as f:
        f.write('\n'.join(log) + '\n')
    if epochs == max_epochs:
        state = {
            f'head.{name}': torch.zeros(shape, dtype=dtype)
            for name, (shape, dtype) in head_shapes.items()
        }
        state['backbone.conv.weight'] = torch.zeros(8, 3, 3, 3)
        torch.save(
            dict(meta=dict(epoch=max_epochs), state_dict=state),
            osp.join(work_dir, f'epoch_{max_epochs}.pth'))


CLUSTER_HEAD = dict(
    memory=((300, 1280), torch.float32), sample_labels=((6000, ), torch.int64))
INSTANCE_HEAD = dict(
    instance_memory=((6000, 1280), torch.float32),
    sample_labels=((6000, ), torch.int64),
    cluster_sizes=((290, ), torch.int64))


@pytest.fixture
def fake_study(tmp_path):
    work_root = tmp_path / 'work_dirs'
    # main: 2 min an epoch (24 min); instance memory: 3 min an epoch (36);
    # momentum-0 stopped after epoch 6
    _fake_run(
        str(work_root / 'main'), [10.0, 20.0, 30.0, 40.5],
        [20.0, 35.0, 50.0, 61.25],
        2.0,
        clusters=list(range(200, 212)),
        nmi=[0.5 + 0.01 * e for e in range(12)],
        step_times=[0.8, 1.0, 5.0],
        head_shapes=CLUSTER_HEAD)
    _fake_run(
        str(work_root / 'instance-memory'), [8.0, 15.0, 22.0, 33.0],
        [18.0, 30.0, 44.0, 55.0],
        3.0,
        clusters=list(range(300, 312)),
        nmi=[0.4] * 12,
        step_times=[1.5, 1.7, 1.6],
        head_shapes=INSTANCE_HEAD)
    _fake_run(
        str(work_root / 'momentum-0'), [5.0, 9.0], [10.0, 16.0],
        2.0,
        clusters=[150] * 12,
        nmi=[0.3] * 12,
        step_times=[0.9],
        head_shapes=CLUSTER_HEAD)
    return work_root


def _row(text, arm):
    rows = [
        line for line in text.splitlines() if line.startswith(f'| {arm} |')
    ]
    assert len(rows) == 2, rows  # the arms table, then the results
    return [cell.strip() for cell in rows[1].strip('|').split('|')]


def test_runner_writes_tables_and_curves_from_work_dirs(fake_study, tmp_path):
    out = str(tmp_path / 'docs' / 'ablations.md')
    code = run_ablations.main(
        ['--report-only', '--work-root',
         str(fake_study), '--out', out])
    assert code == 0
    with open(out) as f:
        text = f.read()
    # the shortest finished arm took 24 min: each arm's last evaluation
    # by then (instance memory: epoch 6 at 18 min; epoch 9 is at 27)
    assert '| mAP at 24.0 min |' in text
    main_mib = (300 * 1280 * 4 + 6000 * 8) / 2**20
    assert _row(text, 'main') == [
        'main', '40.50', '61.25', '40.50 (epoch 12)', f'{main_mib:.2f} MiB',
        '1.000', '24.0', '211'
    ]
    instance_mib = (6000 * 1280 * 4 + 6000 * 8 + 290 * 8) / 2**20
    assert _row(text, 'instance-memory') == [
        'instance-memory', '33.00', '55.00', '15.00 (epoch 6)',
        f'{instance_mib:.2f} MiB', '1.600', '36.0', '311'
    ]
    incomplete = _row(text, 'momentum-0')
    assert incomplete[1] == '9.00 (incomplete: last evaluation at epoch 6)'
    assert incomplete[4] == '-'  # no final checkpoint
    for arm in ('gem', 'input-256x128', 'main-seed2', 'main-seed3'):
        assert _row(text, arm)[1] == 'not run yet'
    # the per-epoch tables: one column per arm that ran
    assert '| epoch | main | instance-memory | momentum-0 |' in text
    assert '| 12 | 211 | 311 | - |' in text  # clusters
    assert '| 3 | 0.520 | 0.400 | 0.300 |' in text  # NMI, clustered
    assert '| 3 | 0.420 | 0.300 | 0.200 |' in text  # NMI, all
    assert '| 1 | 100 | 100 | 100 |' in text  # outliers
    assert 'run_ablations.py --work-root' in text
    for name in ('map_vs_epoch', 'map_vs_minutes', 'nmi_vs_epoch'):
        png = osp.join(tmp_path, 'docs', 'ablations', f'{name}.png')
        assert osp.getsize(png) > 1000
        assert f'![{name}](ablations/{name}.png)' in text
    assert 'avx512_bf16' in text and '## Schedule' in text
    assert '12 epochs of 50 iterations' in text

    # the developer's reading survives a rewrite; an empty one is refilled
    mine = 'Cluster memory beats instance memory by 7.5 points here.'
    with open(out, 'w') as f:
        f.write(text.replace(run_ablations.READING_PLACEHOLDER, mine))
    run_ablations.main(
        ['--report-only', '--work-root',
         str(fake_study), '--out', out])
    with open(out) as f:
        rewritten = f.read()
    assert f'<!-- reading -->\n{mine}\n<!-- /reading -->' in rewritten
    assert run_ablations.READING_PLACEHOLDER not in rewritten


def test_runner_skips_finished_arms_and_restarts_unfinished(
        fake_study, tmp_path, monkeypatch):
    calls = []

    def fake_run_arm(arm, work_dir, data_root):
        calls.append((arm.name, arm.seed, work_dir, data_root))
        return 0

    monkeypatch.setattr(run_ablations, 'run_arm', fake_run_arm)
    # the report is written after every arm: its curves are tested above
    monkeypatch.setattr(run_ablations, 'plot_study', lambda *args: [])
    weights = tmp_path / 'weights.pth'
    weights.write_bytes(b'')
    monkeypatch.setattr(run_ablations, 'PRETRAINED', str(weights))
    data_root = tmp_path / 'data'
    data_root.mkdir()
    out = str(tmp_path / 'report.md')
    code = run_ablations.main([
        '--arms', 'main', 'momentum-0', 'gem', 'main-seed7', '--seeds',
        '--work-root',
        str(fake_study), '--data-root',
        str(data_root), '--out', out
    ])
    assert code == 0
    assert [(name, seed)
            for name, seed, _, _ in calls] == [('momentum-0', None),
                                               ('gem', None),
                                               ('main-seed7', 7)]
    assert calls[0][2] == osp.abspath(str(fake_study / 'momentum-0'))
    assert calls[0][3] == osp.abspath(str(data_root))
    with open(out) as f:
        text = f.read()
    assert '| main-seed7 |' in text and 'main-seed2' not in text
    # an unknown arm is refused
    with pytest.raises(SystemExit):
        run_ablations.main(['--arms', 'nope', '--report-only'])


def test_run_arm_moves_an_unfinished_run_aside(tmp_path, monkeypatch):
    work_dir = tmp_path / 'main'
    work_dir.mkdir()
    (work_dir / 'old.txt').write_text('half a run')
    arm = run_ablations.seed_arm(3)
    command = run_ablations.train_command(arm, str(work_dir), '/data/m')
    assert command[1].endswith(osp.join('tools', 'train.py'))
    assert command[2].endswith(osp.basename(arm.config))
    assert command[3:6] == ['--work-dir', str(work_dir), '--cfg-options']
    assert 'train_dataloader.dataset.data_root=/data/m' in command
    assert 'val_dataloader.dataset.data_root=/data/m' in command
    assert command[-1] == 'randomness.seed=3'
    monkeypatch.setattr(
        run_ablations, 'train_command',
        lambda *args: [sys.executable, '-c', 'print("trained")'])
    assert run_ablations.run_arm(arm, str(work_dir), '/data/m') == 0
    assert (work_dir / 'console.log').read_text() == 'trained\n'
    aside = glob.glob(str(tmp_path / 'main.incomplete-*'))
    assert len(aside) == 1
    assert open(osp.join(aside[0], 'old.txt')).read() == 'half a run'


def test_runner_reads_a_real_tiny_run(main_run):
    """The records a real (tiny) training writes parse as the hand-written
    ones: pseudo-label statistics, the evaluation, its minutes, the step
    times and the head's memory in the checkpoint."""
    runner, work_dir = main_run
    summary = run_ablations.summarise(work_dir, max_epochs=1)
    assert summary['finished'] and summary['last_eval_epoch'] == 1
    epoch = summary['epochs'][1]
    assert epoch['num_clusters'] == runner.model.head.num_clusters
    assert 'nmi' in epoch and 'num_outliers' in epoch
    assert 0 <= summary['mAP'] <= 100 and 0 <= summary['top1'] <= 100
    assert summary['minutes'] >= 0 and summary['step_time'] > 0
    head = runner.model.head
    assert summary['memory_bytes'] == sum(b.numel() * b.element_size()
                                          for b in head.buffers())


def test_finished_arms_outlive_their_work_dirs_as_records(
        fake_study, tmp_path, monkeypatch):
    """Work directories are scratch: a finished arm's record (committed
    beside the report) keeps it in the report and keeps it from running
    again once its work directory is gone; an unfinished run leaves none."""
    out = str(tmp_path / 'docs' / 'ablations.md')
    records = tmp_path / 'docs' / 'ablations' / 'runs'
    monkeypatch.setattr(run_ablations, 'plot_study', lambda *args: [])
    run_ablations.main(
        ['--report-only', '--work-root',
         str(fake_study), '--out', out])
    assert sorted(os.listdir(records)) == ['instance-memory.json', 'main.json']
    with open(out) as f:
        from_runs = f.read()
    saved = json.loads((records / 'main.json').read_text())
    assert saved['mAP'] == 40.5 and saved['finished']
    assert saved['epochs']['12']['num_clusters'] == 211
    assert 'avx2' in saved['cpu'] and saved['recorded']

    # the work directories are lost: the same report from the records
    import shutil
    shutil.rmtree(fake_study / 'main')
    shutil.rmtree(fake_study / 'instance-memory')
    run_ablations.main(
        ['--report-only', '--work-root',
         str(fake_study), '--out', out])
    with open(out) as f:
        from_records = f.read()
    assert from_records == from_runs
    assert _row(from_records,
                'main')[1:4] == ['40.50', '61.25', '40.50 (epoch 12)']

    # ... and a recorded arm is not trained again
    calls = []
    monkeypatch.setattr(run_ablations, 'run_arm',
                        lambda arm, *args: calls.append(arm.name) or 0)
    weights = tmp_path / 'weights.pth'
    weights.write_bytes(b'')
    monkeypatch.setattr(run_ablations, 'PRETRAINED', str(weights))
    run_ablations.main([
        '--arms', 'main', 'momentum-0', '--work-root',
        str(fake_study), '--data-root',
        str(tmp_path), '--out', out
    ])
    assert calls == ['momentum-0']

    # a record from another machine: the report says which arm ran where,
    # and reads each arm at the equal-minutes budget of its own machine
    saved['cpu'] = 'Other CPU, 64 logical cores; avx2 yes'
    (records / 'main.json').write_text(json.dumps(saved))
    run_ablations.main(
        ['--report-only', '--work-root',
         str(fake_study), '--out', out])
    with open(out) as f:
        text = f.read()
    assert 'Machines (minutes and step times compare only within one' in text
    assert '- A, T 24.0 min: Other CPU, 64 logical cores; avx2 yes: main' \
        in text
    assert ': instance-memory, momentum-0' in text and '- B, T 36.0 min: ' \
        in text
    assert "| mAP at its machine's T min |" in text
    # main alone on A: T is its own 24 min; on B the shortest finished arm
    # is instance-memory (36 min), not main's 24 (epoch 6 there)
    assert _row(text, 'main')[3] == '40.50 (epoch 12, T 24.0)'
    assert _row(text, 'instance-memory')[3] == '33.00 (epoch 12, T 36.0)'
    assert _row(text, 'momentum-0')[3] == '9.00 (epoch 6, T 36.0)'


def test_minutes_plot_tags_each_arm_with_its_machine(fake_study, tmp_path):
    """Curves from several machines share the minutes axis only with their
    machine's tag, and each machine's budget is drawn where it lies."""
    summaries = {
        arm: run_ablations.summarise(str(fake_study / arm), 12)
        for arm in ('main', 'instance-memory', 'momentum-0')
    }
    summaries['main']['cpu'] = 'Other CPU'
    figures = run_ablations.draw_study(
        run_ablations.ARMS, summaries, cpu='This CPU')
    assert sorted(figures) == [
        'map_vs_epoch.png', 'map_vs_minutes.png', 'nmi_vs_epoch.png'
    ]

    def panel(name, title):
        axes = [a for a in figures[name].axes if a.get_title() == title]
        assert len(axes) == 1
        return axes[0]

    memory = panel('map_vs_minutes.png', 'memory')
    assert memory.get_legend_handles_labels()[1] == [
        'cluster memory [A]', 'instance memory (SpCL), m 0.2 [B]'
    ]
    budgets = sorted(line.get_xdata()[0] for line in memory.lines
                     if line.get_linestyle() == ':')
    assert budgets == [24.0, 36.0]
    assert sorted(t.get_text() for t in memory.texts) == ['A', 'B']
    # the momentum panel: main (A) and momentum-0 (B), both budgets
    momentum = panel('map_vs_minutes.png', 'momentum')
    assert 'm 0 (no momentum) [B]' in momentum.get_legend_handles_labels()[1]
    # epochs are the same on every machine: no tags there
    assert panel('map_vs_epoch.png',
                 'memory').get_legend_handles_labels()[1] == [
                     'cluster memory', 'instance memory (SpCL), m 0.2'
                 ]

    # one machine: no tags, and its one budget is still drawn
    summaries['main']['cpu'] = 'This CPU'
    memory = run_ablations.draw_study(
        run_ablations.ARMS, summaries,
        cpu='This CPU')['map_vs_minutes.png'].axes[0]
    assert memory.get_legend_handles_labels()[1] == [
        'cluster memory', 'instance memory (SpCL), m 0.2'
    ]
    assert [
        line.get_xdata()[0] for line in memory.lines
        if line.get_linestyle() == ':'
    ] == [24.0]
    assert not memory.texts


def test_an_arm_on_a_longer_schedule_is_finished_at_its_own_last_epoch(
        tmp_path, monkeypatch):
    """input-128x64-36e runs 36 epochs: 12 are not the end of it, and the
    per-epoch tables grow to its length."""
    monkeypatch.setattr(run_ablations, 'plot_study', lambda *args: [])
    work_root = tmp_path / 'work_dirs'
    long_arm = str(work_root / 'input-128x64-36e')
    for arm in ('main', 'input-128x64-36e'):  # both 12 epochs
        _fake_run(
            str(work_root / arm), [10.0, 20.0, 30.0, 40.0],
            [20.0, 30.0, 40.0, 50.0],
            1.0,
            clusters=[100] * 12,
            nmi=[0.5] * 12,
            step_times=[0.5],
            head_shapes=CLUSTER_HEAD)
    out = str(tmp_path / 'report.md')
    args = ['--report-only', '--work-root', str(work_root), '--out', out]
    run_ablations.main(args)
    with open(out) as f:
        text = f.read()
    assert _row(text, 'main')[1] == '40.00'
    assert _row(text, 'input-128x64-36e')[1] == \
        '40.00 (incomplete: last evaluation at epoch 12)'
    assert '| 13 |' not in text

    import shutil
    shutil.rmtree(long_arm)
    maps = [10.0 + i for i in range(12)]
    _fake_run(
        long_arm,
        maps,
        maps,
        1.0,
        clusters=list(range(100, 136)),
        nmi=[0.5] * 36,
        step_times=[0.5],
        head_shapes=CLUSTER_HEAD,
        max_epochs=36)
    run_ablations.main(args)
    with open(out) as f:
        text = f.read()
    assert _row(text, 'input-128x64-36e')[1:3] == ['21.00', '21.00']
    assert '| 36 | - | 135 |' in text  # clusters of its last epoch
