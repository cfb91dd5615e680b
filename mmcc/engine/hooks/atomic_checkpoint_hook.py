import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

from mmcc.registry import HOOKS


def replace_text_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so
    a reader sees the old content or the new one, never a part."""
    partial = f'{path}.partial'
    with open(partial, 'w') as f:
        f.write(text)
    os.replace(partial, path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook``, safe against a kill at any moment.

    mmengine's hook deletes the oldest checkpoint *before* writing the new
    one, and writes it in place: killed mid-write, a run is left with a
    truncated newest file, and with ``max_keep_ckpts=1`` no complete one at
    all. This hook writes each checkpoint to a hidden ``.NAME.partial`` file
    and renames it into place, then points ``last_checkpoint`` at it (also
    by a rename), and only then deletes what ``max_keep_ckpts`` retires. So
    ``--resume`` (auto) always finds the last complete checkpoint. Takes
    ``CheckpointHook``'s arguments; remote storage keeps mmengine's
    behaviour.

    A validation before any training iteration (``ValBeforeTrainHook``)
    scores the weights the run started from, which the user already has:
    it is logged but not kept as a "best" checkpoint.
    """

    def after_val_epoch(self, runner, metrics):
        if runner.iter == 0:
            return
        super().after_val_epoch(runner, metrics)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        retired = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            # (the epoch and the best checkpoint may both save this step)
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                retired.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        partial = f'.{filename}.partial'
        runner.save_checkpoint(
            self.out_dir,
            partial,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        os.replace(osp.join(self.out_dir, partial), self.last_ckpt)
        replace_text_atomically(
            osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old in retired:
            path = osp.join(self.out_dir, self.filename_tmpl.format(old))
            if osp.isfile(path):
                os.remove(path)
