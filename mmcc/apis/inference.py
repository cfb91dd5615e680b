"""Embed images with a trained re-ID model, outside the Runner.

:func:`init_model` builds the embedder of a config (backbone and neck; the
training head is left out) and loads a checkpoint; :func:`embed_images`
runs the config's test pipeline and the model's data preprocessor on image
files or arrays, exactly as the Runner's test loop does, and returns unit
embeddings.
"""
import copy
import os
from collections import OrderedDict
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.model import is_model_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import CheckpointLoader, load_state_dict

from mmcc.registry import MODELS, TRANSFORMS
from mmcc.utils import register_all_modules

ImageType = Union[str, os.PathLike, np.ndarray]
_LOADER = 'LoadImageFromFile'


def _default_device() -> str:
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def _load_weights(model: torch.nn.Module, checkpoint: str) -> None:
    """Load a checkpoint's backbone and neck weights, strictly.

    The file is read by mmengine's :class:`CheckpointLoader` (for local
    paths and http(s) URLs, mmcc's ``weights_only=True`` loaders). The
    training head's state (cluster memory) is not part of the embedder and
    is dropped; any other key the model lacks, or misses, is an error: a
    config that does not match its checkpoint would otherwise embed with
    random weights.
    """
    ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    if isinstance(ckpt, dict):
        state_dict = ckpt.get('state_dict', ckpt)
    if not isinstance(ckpt, dict) or not isinstance(state_dict, dict):
        raise ValueError(f'{checkpoint} holds no state dict')
    metadata = getattr(state_dict, '_metadata', OrderedDict())
    weights = OrderedDict()
    for key, value in state_dict.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        if not key.startswith('head.'):
            weights[key] = value
    weights._metadata = metadata
    load_state_dict(model, weights, strict=True)


def init_model(config: Union[str, os.PathLike, Config],
               checkpoint: Optional[str] = None,
               device: Union[str, torch.device, None] = None,
               cfg_options: Optional[dict] = None) -> torch.nn.Module:
    """Build a config's re-ID embedder for inference.

    Args:
        config (str | Config): Config file path or loaded config.
        checkpoint (str, optional): Checkpoint of a trained model (a
            Runner's ``epoch_N.pth`` or a ``{'state_dict': ...}`` file). When
            given, the backbone's ``init_cfg`` is dropped (no ImageNet
            weights are read or downloaded) and the checkpoint's backbone
            and neck weights are loaded strictly. Without one the model is
            initialised as its config says, like ``tools/test.py`` without
            a checkpoint.
        device (str | torch.device, optional): Defaults to ``'cuda'`` when
            available, else ``'cpu'``.
        cfg_options (dict, optional): Overrides merged into the config, e.g.
            ``{'model.backbone.widen_factor': 0.5}``.

    Returns:
        ReIDModel: In eval mode on ``device``, without the training head.
        ``model.cfg`` is the config; :func:`embed_images` reads its test
        pipeline (``test_dataloader.dataset.pipeline``).
    """
    if isinstance(config, (str, os.PathLike)):
        config = Config.fromfile(os.fspath(config))
    elif isinstance(config, Config):
        config = copy.deepcopy(config)
    else:
        raise TypeError('config must be a file path or a Config, not '
                        f'{type(config).__name__}')
    if cfg_options:
        config.merge_from_dict(cfg_options)
    model_cfg = copy.deepcopy(config.model)
    model_cfg.pop('head', None)  # the training head: not the embedder
    if checkpoint is not None:
        model_cfg.get('backbone', {}).pop('init_cfg', None)
        model_cfg.pop('init_cfg', None)

    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(
            config.get('default_scope', 'mmcc')):
        model = MODELS.build(model_cfg)
        if checkpoint is None:
            model.init_weights()
        else:
            _load_weights(model, checkpoint)
    model.cfg = config
    model.to(device if device is not None else _default_device())
    model.eval()
    return model


def _test_pipeline(cfg: Config, load_files: bool) -> Compose:
    """The config's test pipeline; without its image loader for arrays."""
    try:
        steps = cfg.test_dataloader.dataset.pipeline
    except AttributeError:
        raise ValueError('the config has no test_dataloader.dataset.pipeline')
    steps = [
        copy.deepcopy(t) for t in steps
        if load_files or not str(t['type']).split('.')[-1] == _LOADER
    ]
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmcc')):
        return Compose([TRANSFORMS.build(t) for t in steps])


def _as_list(images) -> list:
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray):
        return [images] if images.ndim == 3 else list(images)
    return list(images)


def _array_input(img: np.ndarray, channel_order: str) -> dict:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or \
            img.ndim != 3 or img.shape[2] != 3:
        desc = (f'{img.dtype} array of shape {img.shape}' if isinstance(
            img, np.ndarray) else type(img).__name__)
        raise ValueError('embed_images takes file paths or HxWx3 uint8 '
                         f'arrays, got a {desc}')
    if channel_order == 'rgb':
        img = img[..., ::-1]
    img = np.ascontiguousarray(img)
    return dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2])


@torch.no_grad()
def embed_images(model: torch.nn.Module,
                 images: Union[ImageType, Sequence[ImageType]],
                 batch_size: int = 32,
                 channel_order: str = 'bgr') -> np.ndarray:
    """Embed images with a model from :func:`init_model`.

    Each image goes through the config's test pipeline (for arrays without
    its ``LoadImageFromFile``), then the model's data preprocessor (BGR to
    RGB, mean/std) and ``model(..., mode='tensor')``: the embeddings the
    Runner's test loop computes for the same files. Batches of
    ``batch_size`` images are read and embedded at a time; the model runs
    in eval mode (its mode is restored afterwards), so the batch size does
    not change the result beyond float rounding.

    Args:
        model (ReIDModel): With the config as ``model.cfg``
            (:func:`init_model` sets it).
        images (list): Image file paths, or HxWx3 ``uint8`` arrays in BGR
            order as ``mmcv.imread`` / ``cv2.imread`` return them (a mix is
            fine). A single path or array, or an (N, H, W, 3) array, is taken
            as that list.
        batch_size (int): Images per forward pass. Defaults to 32.
        channel_order (str): ``'bgr'`` (default) or ``'rgb'``: the channel
            order of the *arrays* (e.g. ``'rgb'`` for PIL or torchvision
            frames). Files are always read as mmcv reads them.

    Returns:
        np.ndarray: (N, D) float32, L2-normalised rows, in input order.
    """
    if channel_order not in ('bgr', 'rgb'):
        raise ValueError(
            f"channel_order must be 'bgr' or 'rgb', not {channel_order!r}")
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, not {batch_size}')
    if is_model_wrapper(model):
        model = model.module
    cfg = getattr(model, 'cfg', None)
    if cfg is None:
        raise ValueError('the model carries no config (model.cfg): build it '
                         'with mmcc.apis.init_model')
    images = _as_list(images)
    if not images:
        return np.zeros((0, model.neck.out_channels), dtype=np.float32)
    file_pipeline = _test_pipeline(cfg, load_files=True)
    array_pipeline = _test_pipeline(cfg, load_files=False)

    def prepare(img):
        if isinstance(img, (str, os.PathLike)):
            return file_pipeline(dict(img_path=os.fspath(img)))
        return array_pipeline(_array_input(img, channel_order))

    was_training = model.training
    model.eval()
    feats: List[torch.Tensor] = []
    try:
        for start in range(0, len(images), batch_size):
            items = [prepare(img) for img in images[start:start + batch_size]]
            # Images of one size per forward: the preprocessor would pad a
            # mixed batch, which changes the embeddings (a test pipeline
            # with a fixed Resize always gives one group).
            out = [None] * len(items)
            shapes = [tuple(item['inputs'].shape) for item in items]
            for shape in dict.fromkeys(shapes):
                idx = [i for i, s in enumerate(shapes) if s == shape]
                data = pseudo_collate([items[i] for i in idx])
                data = model.data_preprocessor(data, False)
                group = model(data['inputs'], mode='tensor').float().cpu()
                for i, feat in zip(idx, group):
                    out[i] = feat
            feats.append(torch.stack(out))
    finally:
        model.train(was_training)
    return torch.cat(feats).numpy()
