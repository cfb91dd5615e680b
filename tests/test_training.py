"""End-to-end: the demo config trains on tiny synthetic data with the Runner.

The PseudoLabelHook re-clusters before every epoch; the labels must reach
the model head and the sampler (and so every batch the data loader yields,
persistent workers included), and evaluation must run at the end.
"""
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmcc.engine.hooks.pseudo_label_hook import train_sampler
from mmcc.utils import register_all_modules

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(
    ROOT, 'configs/cluster_contrast/'
    'cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py')


class BatchRecorder(Hook):
    """Records, per epoch, the labels the head and sampler hold and the
    sample indices of every training batch."""

    def __init__(self):
        self.batches, self.head_labels, self.sampler_labels = {}, {}, {}
        self.stats = {}

    def before_train_epoch(self, runner):
        # registered with priority LOW: runs after PseudoLabelHook (NORMAL)
        epoch = runner.epoch
        self.head_labels[epoch] = runner.model.head.sample_labels.clone()
        self.sampler_labels[epoch] = np.array(
            train_sampler(runner.train_dataloader).labels)
        self.batches[epoch] = []
        hook = [
            h for h in runner.hooks if type(h).__name__ == 'PseudoLabelHook'
        ][0]
        self.stats[epoch] = hook.last_stats

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        self.batches[runner.epoch].append(
            [int(s.sample_idx) for s in data_batch['data_samples']])


def _tiny_cfg(data_root, work_dir):
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.work_dir = str(work_dir)
    cfg.model.backbone.init_cfg = None  # no download in tests
    for key in ('train_dataloader', 'cluster_dataloader', 'val_dataloader',
                'test_dataloader'):
        cfg[key].dataset.data_root = data_root
        cfg[key].batch_size = 8
    cfg.train_dataloader.num_workers = 1
    cfg.train_dataloader.persistent_workers = True
    # only the loader's batch size: P = 8 // 4 follows
    cfg.train_dataloader.sampler.update(num_instances=4, iters_per_epoch=3)
    for key in ('cluster_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].num_workers = 0
        cfg[key].pop('persistent_workers', None)
    cfg.train_cfg.update(max_epochs=2, val_interval=2)
    cfg.param_scheduler.milestones = [1]
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.logger.interval = 1
    # k1/k2 scaled to 64 training images (30/6 are for thousands); with the
    # seeded random initialisation DBSCAN finds several clusters + outliers
    cfg.custom_hooks[0].cluster.update(k1=10, k2=3)
    cfg.custom_hooks[0].progress = False
    return cfg


def test_demo_config_trains_end_to_end(tiny_synthetic, tmp_path):
    register_all_modules(init_default_scope=False)
    torch.set_num_threads(1)
    runner = Runner.from_cfg(_tiny_cfg(tiny_synthetic, tmp_path))
    recorder = BatchRecorder()
    runner.register_hook(recorder, priority='LOW')
    runner.train()

    head = runner.model.head
    assert head.memory.shape[0] == int(head.sample_labels.max()) + 1
    torch.testing.assert_close(
        head.memory.norm(dim=1), torch.ones(head.memory.shape[0]))
    for epoch in (0, 1):
        labels = recorder.sampler_labels[epoch]
        # the head and the sampler hold the labels of this epoch's clustering
        assert np.array_equal(labels, recorder.head_labels[epoch].numpy())
        batches = recorder.batches[epoch]
        assert len(batches) == 3 and all(len(b) == 8 for b in batches)
        for batch in batches:
            batch_labels = labels[batch]
            assert (batch_labels >= 0).all(), 'an outlier was sampled'
            # P x Z structure: blocks of 4 consecutive samples share a label
            blocks = batch_labels.reshape(2, 4)
            assert (blocks == blocks[:, :1]).all()

    # the end-of-training evaluation ran with the re-ID metric
    scalars = runner.message_hub.log_scalars
    assert 0.0 <= scalars['val/reid/mAP'].current() <= 100.0
    loss = scalars['train/loss'].data[0]
    assert np.isfinite(loss).all()
    assert (loss[:3] > 0).all()  # several clusters in epoch 1: CE > 0
    assert osp.exists(osp.join(str(tmp_path), 'epoch_2.pth'))
    first = recorder.stats[0]
    assert first['num_clusters'] >= 2 and first['num_outliers'] >= 1
    assert first['num_outliers'] == int((recorder.sampler_labels[0] < 0).sum())
    assert 0.0 <= first['nmi'] <= 1.0


def test_clustering_reports_its_own_timing_and_progress(
        tiny_synthetic, tmp_path):
    """Clustering runs before the iteration timer starts the epoch's clock
    (it was counted into the first iteration's data_time), and logs its
    own time by stage; embedding progress is logged one line at a time in
    a log file (no carriage returns)."""
    register_all_modules(init_default_scope=False)
    torch.set_num_threads(1)
    cfg = _tiny_cfg(tiny_synthetic, tmp_path)
    cfg.custom_hooks[0].progress = True
    cfg.train_cfg.update(max_epochs=1, val_interval=10)
    runner = Runner.from_cfg(cfg)
    names = [type(h).__name__ for h in runner.hooks]
    assert names.index('PseudoLabelHook') < names.index('IterTimerHook')
    runner.train()
    log = open(runner.logger.log_file).read()
    assert '\r' not in log
    assert 'embedding: 8/8 batches' in log
    line = next(x for x in log.splitlines() if 'pseudo-labels took' in x)
    for stage in ('embed', 'knn', 'jaccard', 'dbscan'):
        assert f'{stage} ' in line, line
    # ... and hands the stage times to the visualizer's backends
    scalars = open(osp.join(runner.log_dir, 'vis_data', 'scalars.json')).read()
    assert '"pseudo/time_knn_s"' in scalars
