"""Input checks shared by the clustering and evaluation functions.

Every check costs one pass over its input (``np.isfinite(x).all()``, or a
row-norm pass), negligible beside the O(N^2 D) searches they guard; the
counts that an error message reports are computed only once a check has
failed. Errors are ``ValueError`` naming the argument.
"""
import numbers
from typing import Union

import numpy as np
import scipy.sparse as sp
import torch

# Largest |norm - 1| of a row still taken as L2-normalised: float16 or
# bfloat16 embeddings normalised before the cast deviate by up to a few
# 1e-3 / 2, float32 ones by ~1e-7.
NORM_ATOL = 1e-3

Array = Union[np.ndarray, torch.Tensor]


def _values(x):
    """The stored values of ``x`` as an array or tensor (sparse: data)."""
    if sp.issparse(x):
        return x.data
    if isinstance(x, torch.Tensor):
        return x.detach()
    return np.asarray(x)


def check_finite(x, name: str, allow_posinf: bool = False) -> None:
    """Refuse NaN and Inf in ``x`` (array, tensor or scipy sparse).

    Args:
        x: The values; for a sparse matrix its stored entries.
        name: The argument's name, for the message.
        allow_posinf: Accept ``+inf`` (e.g. "infinitely far" distances).

    Raises:
        ValueError: ``x`` holds NaN or Inf; the message counts them.
    """
    v = _values(x)
    # Fast path without an elementwise mask (2 GB for 10^6 x 2048 floats):
    # NaN and Inf propagate into a sum. A finite sum proves all finite; an
    # infinite one (or overflow) falls through to the counting below. The
    # tensor is summed in its own dtype: torch's sum(dtype=float64) first
    # makes a float64 copy (16 GB for those floats, which ran a 24 GB
    # machine out of memory); NumPy's casts in small buffers.
    if isinstance(v, torch.Tensor):
        if not v.is_floating_point() or bool(torch.isfinite(v.sum())):
            return
        if bool(torch.isfinite(v).all()):
            return
        num_nan = int(torch.isnan(v).sum())
        num_pos = int((v == float('inf')).sum())
        num_neg = int((v == -float('inf')).sum())
    else:
        if not np.issubdtype(v.dtype, np.inexact) or np.isfinite(
                v.sum(dtype=np.float64 if np.isrealobj(v) else None)):
            return
        if np.isfinite(v).all():
            return
        num_nan = int(np.isnan(v).sum())
        num_pos = int((v == np.inf).sum())
        num_neg = int((v == -np.inf).sum())
    if allow_posinf:
        if num_nan == 0 and num_neg == 0:
            return
        raise ValueError(f'{name} contains {num_nan} NaN and {num_neg} -Inf '
                         f'value(s) (+Inf is allowed); is it the output of '
                         f'a diverged model?')
    raise ValueError(f'{name} contains {num_nan} NaN and {num_pos + num_neg} '
                     f'Inf value(s); is it the output of a diverged model?')


def check_features(features, name: str = 'features') -> None:
    """Require (N, D) features with N >= 1, D >= 1, all finite.

    Raises:
        ValueError: Wrong number of dimensions, no rows or no columns, or
            NaN/Inf values.
    """
    shape = tuple(features.shape)
    if len(shape) != 2:
        raise ValueError(f'{name} must be 2-D (N, D), got shape {shape}')
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f'{name} must have at least one row and one column, '
                         f'got shape {shape}')
    check_finite(features, name)


def check_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int, required to be an integer >= ``minimum``."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or value < minimum):
        raise ValueError(
            f'{name} must be an integer >= {minimum}, got {value!r}')
    return int(value)


def l2_normalised(features: Array,
                  name: str = 'features',
                  atol: float = NORM_ATOL) -> Array:
    """``features`` with unit rows: unchanged if already unit rows.

    Rows whose norm lies within ``atol`` of 1 everywhere leave the input
    untouched (the same object, so results on normalised input stay bit
    for bit those of the unchecked code); otherwise every row is divided
    by its norm (a new array or tensor of the same type and dtype).

    Args:
        features: (N, D) finite float features, array or tensor.
        name: The argument's name, for the message.
        atol: Tolerance on ``|norm - 1|``.

    Raises:
        ValueError: A row has norm 0 and cannot be normalised.
    """
    if isinstance(features, torch.Tensor):
        norms = torch.linalg.vector_norm(features.detach().float(), dim=1)
        if bool(((norms - 1).abs() <= atol).all()):
            return features
        zero = torch.nonzero(norms == 0)[:, 0]
        if len(zero):
            raise ValueError(f'{name} has {len(zero)} row(s) of norm 0 (row '
                             f'{int(zero[0])} first), which cannot be '
                             'L2-normalised')
        return features / norms.to(features.dtype).unsqueeze(1)
    # einsum: no (N, D) temporary of squares, as np.linalg.norm makes
    norms = np.sqrt(np.einsum('nd,nd->n', features, features))
    if (np.abs(norms - 1) <= atol).all():
        return features
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(f'{name} has {zero.size} row(s) of norm 0 (row '
                         f'{zero[0]} first), which cannot be L2-normalised')
    return (features / norms[:, None]).astype(features.dtype, copy=False)
