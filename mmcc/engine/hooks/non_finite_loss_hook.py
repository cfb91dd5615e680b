import torch
from mmengine.hooks import Hook

from mmcc.registry import HOOKS


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training at the first NaN/Inf loss, naming the epoch and step.

    A NaN embedding makes every logit, the loss and then the weights and
    the cluster memory NaN; training on would only spread it, and the
    next checkpoint would keep it. mmengine's ``CheckInvalidLossHook``
    checks every ``interval`` iterations and says neither where nor what;
    this one checks every iteration (one ``isfinite`` on a scalar) and
    raises ``FloatingPointError`` before the epoch's checkpoint is written.
    """

    priority = 'VERY_HIGH'

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        loss = (outputs or {}).get('loss')
        if loss is not None and not bool(torch.isfinite(loss).all()):
            raise FloatingPointError(
                f'The loss is {float(loss.detach())} at epoch '
                f'{runner.epoch + 1}, '
                f'iteration {batch_idx + 1} of the epoch (step '
                f'{runner.iter + 1}): the embeddings or the cluster memory '
                'became NaN/Inf. Resume from the last checkpoint, e.g. with '
                'a lower learning rate.')
