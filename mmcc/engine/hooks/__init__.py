from .atomic_checkpoint_hook import AtomicCheckpointHook
from .non_finite_loss_hook import NonFiniteLossHook
from .pseudo_label_hook import PseudoLabelHook
from .ranked_list_hook import RankedListHook
from .sync_norm_buffers_hook import SyncNormBuffersHook
from .val_before_train_hook import ValBeforeTrainHook

__all__ = [
    'PseudoLabelHook', 'AtomicCheckpointHook', 'NonFiniteLossHook',
    'RankedListHook', 'SyncNormBuffersHook', 'ValBeforeTrainHook'
]
