"""The demo config's one-process evaluation: ``ValBeforeTrainHook``
validates the initial model before training, ``RankedListHook(when=
'last_val')`` draws the trained model's ranked lists from the last
validation, and neither changes what the run trains."""
import glob
import json
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner
from test_training import _tiny_cfg

from mmcc.engine.hooks import RankedListHook
from mmcc.evaluation.functional import rank_metrics
from mmcc.utils import register_all_modules


def _hook_types(cfg):
    return [h['type'] for h in cfg.custom_hooks]


def _train(cfg):
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def _evaluations(runner):
    """(step, mAP) of every validation the run logged."""
    path = osp.join(runner.log_dir, 'vis_data', 'scalars.json')
    with open(path) as f:
        return [(e['step'], e['reid/mAP']) for e in map(json.loads, f)
                if 'reid/mAP' in e]


def test_validation_before_training_logs_epoch_0_and_changes_nothing(
        tiny_synthetic, tmp_path):
    register_all_modules(init_default_scope=False)
    torch.set_num_threads(1)
    cfg = _tiny_cfg(tiny_synthetic, tmp_path / 'with')
    assert 'ValBeforeTrainHook' in _hook_types(cfg)  # the demo config's
    with_hook = _train(cfg)
    evaluations = _evaluations(with_hook)
    # epoch 0 (the initial model), then the end of training (epoch 2)
    assert [step for step, _ in evaluations] == [0, 2]
    # the initial weights are not kept as a "best" checkpoint
    best = sorted(
        osp.basename(p) for p in glob.glob(str(tmp_path / 'with' / 'best_*')))
    assert best == ['best_reid_mAP_epoch_2.pth']

    cfg = _tiny_cfg(tiny_synthetic, tmp_path / 'without')
    cfg.custom_hooks = [
        h for h in cfg.custom_hooks if h['type'] != 'ValBeforeTrainHook'
    ]
    without_hook = _train(cfg)
    assert [step for step, _ in _evaluations(without_hook)] == [2]
    # the same training, to the bit: weights, BN statistics, memory
    trained = without_hook.model.state_dict()
    for name, value in with_hook.model.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert _evaluations(without_hook)[-1] == evaluations[-1]

    # the trained model's ranked lists, one per query drawn, from the last
    # validation: the ranking the hook drew scores as that validation did,
    # not as the epoch-0 one
    files = glob.glob(str(tmp_path / 'with' / 'ranked_lists' / '*.png'))
    queries = glob.glob(osp.join(tiny_synthetic, 'query', '*.jpg'))
    assert len(files) == min(20, len(queries)) > 0
    hook = next(h for h in with_hook.hooks if isinstance(h, RankedListHook))
    assert sorted(hook.files) == sorted(files)
    ranking = hook.metric.last_ranking
    drawn = 100 * rank_metrics(ranking['distmat'], ranking['query_ids'],
                               ranking['gallery_ids'], ranking['query_cams'],
                               ranking['gallery_cams'])['mAP']
    (_, before), (_, after) = evaluations
    assert before != pytest.approx(after)
    assert drawn == pytest.approx(after)


def test_a_resumed_run_is_not_validated_before_training(
        tiny_synthetic, tmp_path):
    register_all_modules(init_default_scope=False)
    torch.set_num_threads(1)
    cfg = _tiny_cfg(tiny_synthetic, tmp_path)
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    _train(cfg)
    cfg = _tiny_cfg(tiny_synthetic, tmp_path)
    cfg.resume = True
    resumed = _train(cfg)  # epoch 2 of 2, from epoch_1.pth
    assert [step for step, _ in _evaluations(resumed)] == [2]


def test_ranked_list_hook_rejects_an_unknown_moment():
    with pytest.raises(ValueError, match='last_val'):
        RankedListHook(when='end')


def test_no_validation_configured_is_a_warning_not_an_error():
    from types import SimpleNamespace

    from mmengine.logging import MMLogger

    from mmcc.engine.hooks import ValBeforeTrainHook
    logger = MMLogger.get_instance('val_before_train_test')
    warnings = []
    logger.warning = warnings.append
    ValBeforeTrainHook().before_train(
        SimpleNamespace(iter=0, val_loop=None, logger=logger))
    assert len(warnings) == 1 and 'nothing to validate' in warnings[0]
