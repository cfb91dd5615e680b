"""Layers and model utilities shared by the registered components."""
from .inference_copy import FoldedBackboneCache, fold_batch_norm_copy
from .precise_batch_norm import (PreciseBatchNorm2d, batch_norm_stats,
                                 convert_precise_batch_norm)

__all__ = [
    'FoldedBackboneCache', 'fold_batch_norm_copy', 'PreciseBatchNorm2d',
    'batch_norm_stats', 'convert_precise_batch_norm'
]
