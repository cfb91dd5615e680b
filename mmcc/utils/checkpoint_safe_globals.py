"""Let mmengine resume training on torch >= 2.6 with ``weights_only=True``.

Since torch 2.6, ``torch.load`` refuses every pickled global that is not on
an allow-list. mmengine's training checkpoints hold, besides tensors, the
message hub's :class:`HistoryBuffer` objects (with numpy arrays inside), so
``runner.resume`` fails. Instead of turning ``weights_only`` off -- which
would let a checkpoint a user downloads run arbitrary code -- we allow
exactly the globals such checkpoints need.

Every checkpoint that mmengine loads for mmcc (``load_from``, ``--resume``,
``tools/test.py``, ``init_cfg=Pretrained``) goes through
:func:`safe_torch_load`, which passes ``weights_only=True`` explicitly:
``register_safe_checkpoint_loaders`` installs it as mmengine's loader for
local paths and http(s) URLs when mmcc is imported.

``HistoryBuffer`` pickles its statistics methods as
``getattr(HistoryBuffer, 'min')``. Allowing the builtin ``getattr`` would let
a file fetch any attribute of any allowed object, so the pickled name
``builtins.getattr`` is mapped to :func:`_history_buffer_getattr`, which only
returns HistoryBuffer's statistics methods.
"""
import os.path as osp
import pickle

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj, name):
    """A ``getattr`` restricted to HistoryBuffer's statistics methods."""
    allowed = set(_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'mmcc refuses getattr({obj!r}, {name!r}) in a checkpoint: only '
        f'HistoryBuffer statistics methods ({sorted(allowed)}) are allowed')


def _numpy_multiarray():
    core = getattr(np, '_core', None)  # numpy >= 2
    return core.multiarray if core is not None else np.core.multiarray


def checkpoint_safe_globals() -> list:
    """The (object, pickled name) pairs mmengine checkpoints need."""
    multiarray = _numpy_multiarray()
    pairs = [(HistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
             (np.ndarray, 'numpy.ndarray'), (np.dtype, 'numpy.dtype')]
    # numpy 1.x and 2.x pickle arrays under different module paths.
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        pairs.append((multiarray._reconstruct, f'{module}._reconstruct'))
        pairs.append((multiarray.scalar, f'{module}.scalar'))
    for name in ('builtins.getattr', '__builtin__.getattr'):
        pairs.append((_history_buffer_getattr, name))
    # numpy >= 1.25 may pickle dtypes by their class, e.g. Float64DType.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in ('Float64DType', 'Float32DType', 'Float16DType',
                     'Int64DType', 'Int32DType', 'BoolDType'):
            if hasattr(dtypes, name):
                pairs.append((getattr(dtypes, name), f'numpy.dtypes.{name}'))
    return pairs


def register_checkpoint_safe_globals() -> None:
    """Add :func:`checkpoint_safe_globals` to torch's allow-list (idempotent).

    A no-op on torch versions without ``add_safe_globals``.
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:
        add(checkpoint_safe_globals())


def safe_torch_load(file, map_location=None):
    """``torch.load`` with ``weights_only=True`` and mmcc's allow-list.

    ``weights_only`` is passed explicitly, so neither an old torch default
    nor ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` turns it off: a checkpoint
    that pickles anything outside the allow-list (code, say) is refused
    with ``pickle.UnpicklingError``.
    """
    register_checkpoint_safe_globals()
    return torch.load(file, map_location=map_location, weights_only=True)


def load_local_checkpoint(filename, map_location=None):
    """mmengine's loader for local paths, safe (see :func:`safe_torch_load`).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_torch_load(filename, map_location)


def load_http_checkpoint(filename,
                         map_location=None,
                         model_dir=None,
                         progress=False):
    """mmengine's loader for http(s) URLs (``init_cfg=Pretrained``), safe.

    Rank 0 downloads into torch hub's cache first; the other ranks then
    read the cached file, as mmengine's own loader does.
    """
    rank, world_size = get_dist_info()

    def fetch():
        return torch.hub.load_state_dict_from_url(
            filename,
            model_dir=model_dir,
            map_location=map_location,
            progress=progress,
            weights_only=True)

    if rank == 0:
        checkpoint = fetch()
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = fetch()
    return checkpoint


def register_safe_checkpoint_loaders() -> None:
    """Make mmengine load local and http(s) checkpoints through
    :func:`safe_torch_load`: ``load_from``, ``--resume``, ``tools/test.py``
    and ``init_cfg=dict(type='Pretrained')`` all go through these."""
    register_checkpoint_safe_globals()
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_local_checkpoint, force=True)
    CheckpointLoader.register_scheme(
        prefixes=('http://', 'https://'),
        loader=load_http_checkpoint,
        force=True)
