from typing import Iterator

from mmengine.dist import all_reduce_params, is_distributed
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import Tensor, nn

from mmcc.registry import HOOKS


def synced_buffers(model: nn.Module) -> Iterator[Tensor]:
    """The buffers of ``model`` to average across ranks: all of them but
    those a module lists by name in its ``unsynced_buffers`` attribute."""
    for module in model.modules():
        skip = set(getattr(module, 'unsynced_buffers', ()))
        for name, buffer in module.named_buffers(recurse=False):
            if name not in skip:
                yield buffer


@HOOKS.register_module()
class SyncNormBuffersHook(Hook):
    """Average the normalisation statistics across ranks after each epoch.

    mmengine's ``SyncBuffersHook`` with two differences:

    - it averages every buffer of the model (BatchNorm's running mean,
      variance and batch count, ...) except those a module names in its
      ``unsynced_buffers`` attribute: ``ClusterMemoryHead`` keeps its memory
      and pseudo-labels consistent itself, so a (K, D) all-reduce per epoch
      is saved, and a sharded memory's blocks, which differ by rank, are
      never averaged together;
    - it then calls ``prepare_state_dict()`` (a collective) on every module
      that has it, so that the checkpoint saved by rank 0 right after (the
      checkpoint hook runs later, at a lower priority) holds a sharded
      memory whole.

    As in mmengine's hook, it runs after every training epoch, and before a
    validation epoch that no training epoch synchronised (an
    iteration-based loop). Does nothing in a single process.
    """

    priority = 'NORMAL'

    def __init__(self) -> None:
        # whether after_train_epoch synchronised since the last validation
        self.called_in_train = False

    def _sync(self, runner) -> None:
        if not is_distributed():
            return
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        all_reduce_params(synced_buffers(model), op='mean')
        for module in model.modules():
            prepare = getattr(module, 'prepare_state_dict', None)
            if callable(prepare):
                prepare()

    def before_val_epoch(self, runner) -> None:
        if not self.called_in_train:
            self._sync(runner)
        self.called_in_train = False

    def after_train_epoch(self, runner) -> None:
        self._sync(runner)
        self.called_in_train = True
