"""Long runs die and get resumed: resume with any hook interval, stop at
the first NaN, say so when clustering degenerates."""
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner
from test_training import BatchRecorder, _tiny_cfg

from mmcc.engine.hooks.pseudo_label_hook import train_sampler
from mmcc.utils import register_all_modules


def _runner(cfg, *hooks):
    register_all_modules(init_default_scope=False)
    torch.set_num_threads(1)
    runner = Runner.from_cfg(cfg)
    for hook in hooks:
        runner.register_hook(hook, priority='LOW')
    return runner


def test_resume_between_clusterings(tiny_synthetic, tmp_path):
    """interval=2 re-clusters at epochs 0 and 2; a run resumed at epoch 1
    takes the head's checkpointed labels into the sampler (it crashed with
    'no labels' before)."""
    cfg = _tiny_cfg(tiny_synthetic, tmp_path)
    cfg.custom_hooks[0].interval = 2
    cfg.default_hooks.checkpoint.interval = 1
    cfg.train_cfg.update(max_epochs=1, val_interval=10)
    first = _runner(cfg)
    first.train()
    labels = first.model.head.sample_labels.clone()

    cfg = _tiny_cfg(tiny_synthetic, tmp_path)
    cfg.custom_hooks[0].interval = 2
    cfg.train_cfg.update(max_epochs=2, val_interval=10)
    cfg.resume = True
    recorder = BatchRecorder()
    resumed = _runner(cfg, recorder)
    resumed.train()
    assert resumed.epoch == 2
    # epoch 1 trained on epoch 0's clustering, restored from the checkpoint
    assert torch.equal(recorder.head_labels[1], labels)
    assert (recorder.sampler_labels[1] == labels.numpy()).all()
    for batch in recorder.batches[1]:
        assert (labels[batch] >= 0).all()


class PoisonWeights(Hook):
    """Sets a backbone weight to NaN at a given point."""

    def __init__(self, iteration=None, after_epoch=None):
        self.iteration, self.after_epoch = iteration, after_epoch

    def _poison(self, runner):
        with torch.no_grad():
            runner.model.backbone.conv1.conv.weight.fill_(float('nan'))

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.iteration:
            self._poison(runner)

    def after_train_epoch(self, runner):
        if runner.epoch == self.after_epoch:
            self._poison(runner)


def test_a_nan_loss_stops_the_run_naming_epoch_and_step(
        tiny_synthetic, tmp_path):
    cfg = _tiny_cfg(tiny_synthetic, tmp_path)
    runner = _runner(cfg, PoisonWeights(iteration=5))
    with pytest.raises(
            FloatingPointError,
            match=r'epoch 2, iteration 2 of the epoch \(step 5\)'):
        runner.train()


def test_nan_embeddings_stop_the_clustering_naming_the_epoch(
        tiny_synthetic, tmp_path):
    cfg = _tiny_cfg(tiny_synthetic, tmp_path)
    # poisoned after epoch 0's last step: the next clustering pass sees it
    runner = _runner(cfg, PoisonWeights(after_epoch=0))
    with pytest.raises(FloatingPointError, match=r'Epoch 1 .*NaN/Inf'):
        runner.train()


def test_a_single_cluster_is_reported_and_trains_on(tiny_synthetic, tmp_path):
    cfg = _tiny_cfg(tiny_synthetic, tmp_path)
    cfg.custom_hooks[0].cluster.update(eps=0.99, min_samples=2)
    cfg.train_cfg.update(max_epochs=1, val_interval=10)
    runner = _runner(cfg)
    runner.train()
    assert runner.model.head.num_clusters == 1
    assert train_sampler(runner.train_dataloader).num_identities == 1
    log = open(runner.logger.log_file).read()
    assert 'single cluster' in log and 'the loss is 0' in log


class Killed(Exception):
    pass


class KillAfterEpoch(Hook):
    """Ends the run after an epoch and its checkpoint, as a kill would."""

    def __init__(self, epoch):
        self.epoch = epoch

    def after_train_epoch(self, runner):
        if runner.epoch == self.epoch:
            raise Killed


def _final_state(runner):
    return {
        k: v.detach().clone()
        for k, v in runner.model.state_dict().items()
    }


def test_resumed_equals_uninterrupted_bit_for_bit(tiny_synthetic, tmp_path):
    """3 epochs straight, against 1 epoch + resume to 3, with persistent
    data-loader workers (which carry their random state across epochs; a
    resumed run starts new ones): the augmentation seeds travel with the
    indices, so both runs draw the same images, augment them alike and end
    with the same weights, memory and pseudo-labels."""

    def cfg_for(work_dir, max_epochs, resume=False):
        cfg = _tiny_cfg(tiny_synthetic, work_dir)
        assert cfg.train_dataloader.persistent_workers
        assert cfg.train_dataloader.num_workers >= 1
        cfg.default_hooks.checkpoint.interval = 1
        cfg.train_cfg.update(max_epochs=max_epochs, val_interval=10)
        cfg.resume = resume
        return cfg

    straight = _runner(cfg_for(tmp_path / 'straight', 3))
    straight.train()
    # the same run, killed once epoch 1's checkpoint is written
    killed = _runner(cfg_for(tmp_path / 'resumed', 3))
    killed.register_hook(KillAfterEpoch(0), priority='LOWEST')
    with pytest.raises(Killed):
        killed.train()
    resumed = _runner(cfg_for(tmp_path / 'resumed', 3, resume=True))
    resumed.train()
    assert resumed.epoch == straight.epoch == 3
    expected, got = _final_state(straight), _final_state(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
