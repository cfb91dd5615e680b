"""Mixed precision for ``--amp``: CUDA float16, or CPU bfloat16."""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper

from mmcc.registry import OPTIM_WRAPPERS
from mmcc.utils.device import cpu_has_native_bf16


@OPTIM_WRAPPERS.register_module()
class CPUAutocastOptimWrapper(OptimWrapper):
    """An optimiser wrapper that runs forward passes under CPU autocast.

    mmengine's ``AmpOptimWrapper`` only runs on accelerators. On a CPU with
    native bfloat16 (AVX512-BF16 or AMX), this wrapper autocasts the
    forward pass to bfloat16; bfloat16 has float32's exponent range, so no
    loss scaling is needed.

    Args:
        dtype (str | torch.dtype): The autocast dtype. Defaults to
            ``'bfloat16'``.
        **kwargs: See :class:`mmengine.optim.OptimWrapper`.
    """

    def __init__(self, dtype='bfloat16', **kwargs) -> None:
        super().__init__(**kwargs)
        self.cast_dtype = getattr(torch, dtype) if isinstance(dtype,
                                                              str) else dtype

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast(
                'cpu', dtype=self.cast_dtype):
            yield


def amp_optim_wrapper(optim_wrapper: dict) -> dict:
    """The ``optim_wrapper`` config that ``--amp`` means on this machine.

    CUDA: mmengine's ``AmpOptimWrapper`` (float16, dynamic loss scale).
    A CPU with native bfloat16: :class:`CPUAutocastOptimWrapper`.
    Any other CPU: ``ValueError``, since emulated bfloat16 is several times
    slower than float32 (``docs/benchmarks.md``).
    """
    optim_wrapper = dict(optim_wrapper)
    if torch.cuda.is_available():
        optim_wrapper['type'] = 'AmpOptimWrapper'
        optim_wrapper.setdefault('loss_scale', 'dynamic')
        return optim_wrapper
    if not cpu_has_native_bf16():
        raise ValueError(
            '--amp: this machine has no CUDA device and its CPU has no '
            'native bfloat16 (AVX512-BF16 or AMX), so mixed precision would '
            'be emulated and several times slower than float32; train '
            'without --amp')
    # scoped: found from mmpretrain's tools (default scope mmpretrain) too
    optim_wrapper['type'] = 'mmcc.CPUAutocastOptimWrapper'
    optim_wrapper['dtype'] = 'bfloat16'
    return optim_wrapper
