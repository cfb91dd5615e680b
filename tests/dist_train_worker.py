"""One rank of tests/test_distributed.py, started by torch.distributed.run.

Runs ``tools/train.py`` (so the launcher set-up under test is the tool's
own) with a hook that saves, after the last training iteration and before
any epoch-end buffer synchronisation, what must agree across ranks: the
cluster memory, the pseudo-labels held by the head and by the sampler, the
batches' sample indices and every parameter.

    python -m torch.distributed.run --nproc_per_node 2 \
        tests/dist_train_worker.py OUT_DIR CONFIG [tools/train.py ARGS...]
"""
import os.path as osp
import runpy
import sys

import torch
from mmengine.hooks import Hook

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


class RankStateRecorder(Hook):
    """Saves ``OUT_DIR/rank{R}.pt`` after the run's last iteration."""

    priority = 'VERY_LOW'

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.batches = []

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        from mmengine.model import is_model_wrapper

        from mmcc.engine.hooks.pseudo_label_hook import train_sampler
        self.batches.append(
            [int(s.sample_idx) for s in data_batch['data_samples']])
        if runner.iter + 1 < runner.max_iters:
            return
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        state = dict(
            world_size=runner.world_size,
            wrapped=is_model_wrapper(runner.model),
            memory=model.head.memory.clone(),
            head_labels=model.head.sample_labels.clone(),
            sampler_labels=torch.as_tensor(
                train_sampler(runner.train_dataloader).labels),
            batches=self.batches,
            params={
                k: v.detach().clone()
                for k, v in model.named_parameters()
            })
        torch.save(state, osp.join(self.out_dir, f'rank{runner.rank}.pt'))


def main():
    out_dir, *train_argv = sys.argv[1:]
    train = runpy.run_path(osp.join(ROOT, 'tools', 'train.py'))
    runner = train['build_runner'](train_argv + ['--launcher', 'pytorch'])
    runner.register_hook(RankStateRecorder(out_dir))
    runner.train()


if __name__ == '__main__':
    main()
