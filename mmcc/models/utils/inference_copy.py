"""An inference copy of a backbone with BatchNorm folded into its convs.

In eval mode a BatchNorm after a convolution is a per-channel affine map,
which folds into the convolution's weights and bias (mmcv's
``fuse_conv_bn``). That drops one full read and write of every feature map:
MobileNetV2 in channels-last on 2 threads embeds 1.4x (128 x 64, batch 64)
to 1.8x (256 x 128, batch 32) faster, with outputs equal to 5e-7 relative
(AMD EPYC with avx512_bf16; ``benchmark_memory_format.py``,
docs/scaling.md). mmcc embeds the whole training set every epoch and
evaluates in eval mode, so these passes are a large share of a run.

:class:`FoldedBackboneCache` keeps one such copy, keyed on the identity
and version counter of every parameter and buffer, so that an optimiser
step, ``load_state_dict`` or ``.to()`` makes it rebuild before the next
use.
"""
import copy
import logging
from typing import Optional, Tuple

import torch
from mmcv.cnn import fuse_conv_bn
from mmengine.logging import print_log
from torch import nn

# A wrongly folded BatchNorm (mmcv's fuse_conv_bn pairs a BN with the conv
# registered before it, which is not always the one it follows) changes the
# outputs by O(1); folding rounding is around 1e-6.
_FOLD_TOLERANCE = 1e-3


def _state_key(module: nn.Module) -> Tuple:
    # _version counts the in-place writes of a tensor (optimiser steps,
    # load_state_dict's copy_); data_ptr changes with .to(device/dtype)
    return tuple((t.data_ptr(), t._version)
                 for t in (*module.parameters(), *module.buffers()))


def _hook_dicts(module: nn.Module) -> list:
    """Names of the module's hook registries (they vary across torch)."""
    return [
        name for name, value in vars(module).items()
        if 'hooks' in name and isinstance(value, dict)
    ]


def _copy_without_hooks(module: nn.Module) -> nn.Module:
    # the hooks themselves are not deep-copied (they may hold a runner or
    # a visualiser): the copy starts with empty registries
    memo = {}
    for submodule in module.modules():
        for name in _hook_dicts(submodule):
            hooks = getattr(submodule, name)
            memo[id(hooks)] = type(hooks)()
    return copy.deepcopy(module, memo)


@torch.no_grad()
def fold_batch_norm_copy(backbone: nn.Module,
                         probe: torch.Tensor) -> Optional[nn.Module]:
    """An eval-mode copy of ``backbone`` with its BatchNorms folded.

    The copy is checked against an unfolded copy on ``probe`` (neither
    runs the backbone's hooks) and only returned if their outputs agree.
    It then shares the backbone's forward and backward hooks, module by
    module, so hooks registered on the backbone (before or after) see the
    eval passes too; hooks of a folded BatchNorm are dropped with it.

    Args:
        backbone (nn.Module): In eval mode; not changed.
        probe (Tensor): (B, 3, H, W) input to compare the two on.

    Returns:
        nn.Module or None: The folded copy (no gradients), or None when
        there is nothing to fold or the folded copy disagrees.
    """
    reference = _copy_without_hooks(backbone)
    reference.eval()  # mmpretrain's backbones return None from train()
    folded = copy.deepcopy(reference)
    num_bn = sum(
        isinstance(m, nn.modules.batchnorm._BatchNorm)
        for m in folded.modules())
    try:
        fuse_conv_bn(folded)
    except RuntimeError as error:  # paired a BN with a conv of other width
        return _not_folded(backbone, str(error))
    if num_bn == sum(
            isinstance(m, nn.modules.batchnorm._BatchNorm)
            for m in folded.modules()):
        return None
    folded.requires_grad_(False)
    expected, got = reference(probe), folded(probe)
    del reference
    if isinstance(expected, (tuple, list)):
        expected, got = expected[-1], got[-1]
    error = float((got - expected).norm() / expected.norm().clamp_min(1e-12))
    if not error < _FOLD_TOLERANCE:
        return _not_folded(backbone,
                           f'it changes the output by {error:.1e} (relative)')
    # fuse_conv_bn keeps every module name (a folded BN becomes Identity)
    originals = dict(backbone.named_modules())
    for name, submodule in folded.named_modules():
        original = originals.get(name)
        if original is None or isinstance(submodule, nn.Identity):
            continue
        for hooks in _hook_dicts(original):
            setattr(submodule, hooks, getattr(original, hooks))
    return folded


def _not_folded(backbone: nn.Module, reason: str) -> None:
    print_log(
        f'Not folding the BatchNorms of {type(backbone).__name__} into its '
        f'convolutions for evaluation: {reason}.',
        logger='current',
        level=logging.WARNING)
    return None


class FoldedBackboneCache:
    """One folded copy of a backbone, rebuilt when the backbone changes.

    Not an ``nn.Module``: the copy must stay out of the owner's state dict,
    parameters and ``.to()``.

    Args:
        probe_size (tuple[int, int]): (H, W) of the probe image.
    """

    def __init__(self, probe_size: Tuple[int, int]):
        self.probe_size = tuple(probe_size)
        self._key = None
        self._folded = None

    def get(self,
            backbone: nn.Module,
            memory_format=torch.contiguous_format) -> nn.Module:
        """The folded copy of ``backbone`` (in eval mode), or itself.

        Falls back to ``backbone`` when it has nothing to fold or folding
        changes its outputs, and while any of its modules is in training
        mode (a training-mode BatchNorm has nothing to fold).
        """
        if any(module.training for module in backbone.modules()):
            return backbone
        key = _state_key(backbone)
        if key != self._key:
            self.clear()
            tensor = next(backbone.parameters(), None)
            probe = torch.randn(
                2,
                3,
                *self.probe_size,
                generator=torch.Generator().manual_seed(0)).to(
                    device=tensor.device if tensor is not None else 'cpu',
                    dtype=tensor.dtype if tensor is not None else None)
            probe = probe.contiguous(memory_format=memory_format)
            self._folded = fold_batch_norm_copy(backbone, probe)
            self._key = key
        return self._folded if self._folded is not None else backbone

    def clear(self) -> None:
        """Drop the copy (its memory) until the next :meth:`get`."""
        self._key = None
        self._folded = None
