"""IBN-ResNet-a: structure, and parity with IBN-Net's checkpoint layout.

The parity reference below is an independent plain-torch ResNet-50-IBN-a
written in IBN-Net's layout (module names ``conv1``, ``bn1``, ``layerX``,
``bn1.IN`` / ``bn1.BN``, ``downsample``, ``fc``): random weights and random
BN running statistics, saved as a public-style checkpoint, converted with
``tools/model_converters/ibn_resnet_to_mmcc.py`` and loaded into mmcc's
IBNResNet through its ``init_cfg``. Inputs are small (2 x 3 x 64 x 32).
"""
import importlib.util
from pathlib import Path

import pytest
import torch
from mmpretrain.models.backbones.resnet import Bottleneck
from torch import nn

from mmcc.models.backbones import IBN, IBNBottleneck, IBNResNet
from mmcc.registry import MODELS

REPO = Path(__file__).resolve().parents[1]
CONVERTER_PATH = REPO / 'tools' / 'model_converters' / 'ibn_resnet_to_mmcc.py'
REID_STRIDES = (1, 2, 2, 1)  # last stride 1, as the re-ID configs
INPUT_SHAPE = (2, 3, 64, 32)


def _load_converter():
    """The converter script as a module (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location('ibn_resnet_to_mmcc',
                                                  CONVERTER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


converter = _load_converter()

# ---------------------------------------------------------------------------
# Reference: ResNet-50-IBN-a in IBN-Net's layout, plain torch.


class ReferenceIBN(nn.Module):
    """IN on the first half of the channels, BN on the rest."""

    def __init__(self, channels):
        super().__init__()
        self.half = int(channels * 0.5)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x):
        return torch.cat(
            [self.IN(x[:, :self.half]),
             self.BN(x[:, self.half:])], dim=1)


class ReferenceBottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1, identity or 1x1-conv shortcut."""

    def __init__(self, in_channels, planes, stride, with_ibn):
        super().__init__()
        out_channels = planes * 4
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = ReferenceIBN(planes) if with_ibn else nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(
                    in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class ReferenceResNet50IBNa(nn.Module):
    """Returns the four stage outputs; ``fc`` only exists for the keys."""

    def __init__(self, strides=REID_STRIDES):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for stage, (num_blocks, planes, stride) in enumerate(
                zip((3, 4, 6, 3), (64, 128, 256, 512), strides), start=1):
            blocks = []
            for index in range(num_blocks):
                blocks.append(
                    ReferenceBottleneck(
                        in_channels,
                        planes,
                        stride if index == 0 else 1,
                        with_ibn=stage < 4))
                in_channels = planes * 4
            setattr(self, f'layer{stage}', nn.Sequential(*blocks))
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        outs = []
        for stage in range(1, 5):
            x = getattr(self, f'layer{stage}')(x)
            outs.append(x)
        return tuple(outs)


def _randomise(model, seed=0):
    """Random convs, affine parameters and BN running statistics.

    Convs keep the ReLU-preserving scale and the norms stay near identity,
    so that the features stay O(1) over the 16 blocks and a 1e-5 tolerance
    is meaningful.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor, low, high):
        tensor.copy_(
            torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    def normal(tensor, std):
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                normal(module.weight, (2 / fan_in)**0.5)
            elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)):
                uniform(module.weight, 0.5, 1.0)
                normal(module.bias, 0.1)
                if module.track_running_stats:
                    normal(module.running_mean, 0.1)
                    uniform(module.running_var, 0.5, 2.0)
                    module.num_batches_tracked.fill_(1000)
            elif isinstance(module, nn.Linear):
                normal(module.weight, 0.01)
                normal(module.bias, 0.01)
    return model


@pytest.fixture(scope='module')
def reference():
    return _randomise(ReferenceResNet50IBNa()).eval()


@pytest.fixture(scope='module')
def public_state_dict(reference):
    return reference.state_dict()


# ---------------------------------------------------------------------------
# The backbone


@pytest.fixture(scope='module')
def ibn_resnet50():
    model = MODELS.build(
        dict(
            type='mmcc.IBNResNet',
            depth=50,
            strides=REID_STRIDES,
            out_indices=(0, 1, 2, 3)))
    return model.eval()


def test_stage_shapes(ibn_resnet50):
    with torch.no_grad():
        outs = ibn_resnet50(torch.randn(INPUT_SHAPE))
    # 64x32 / 4 (stem), then strides 1, 2, 2 and 1
    assert [tuple(out.shape) for out in outs] == [(2, 256, 16, 8),
                                                  (2, 512, 8, 4),
                                                  (2, 1024, 4, 2),
                                                  (2, 2048, 4, 2)]


def test_reid_input_last_stride_one():
    model = IBNResNet(depth=50, strides=REID_STRIDES).eval()
    with torch.no_grad():
        (features, ) = model(torch.randn(1, 3, 256, 128))
    assert features.shape == (1, 2048, 16, 8)


def test_ibn_in_stages_1_to_3_only(ibn_resnet50):
    for stage, num_blocks in enumerate((3, 4, 6, 3)):
        layer = getattr(ibn_resnet50, f'layer{stage + 1}')
        assert len(layer) == num_blocks
        for block in layer:
            assert isinstance(block, IBNBottleneck)
            assert isinstance(block, Bottleneck)
            if stage < 3:
                assert isinstance(block.norm1, IBN)
                half = block.mid_channels // 2
                assert block.norm1.IN.num_features == half
                assert block.norm1.IN.affine
                assert not block.norm1.IN.track_running_stats
                assert isinstance(block.norm1.BN, nn.BatchNorm2d)
                assert block.norm1.BN.num_features == half
            else:
                assert isinstance(block.norm1, nn.BatchNorm2d)
            # only norm1 changes
            assert isinstance(block.norm2, nn.BatchNorm2d)
            assert isinstance(block.norm3, nn.BatchNorm2d)
    assert isinstance(ibn_resnet50.norm1, nn.BatchNorm2d)  # the stem


def test_ibn_layer_splits_channels():
    ibn = IBN(6).train()
    x = torch.randn(2, 6, 5, 4) * 3 + 1
    out = ibn(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out[:, :3],
                               nn.functional.instance_norm(x[:, :3]))
    torch.testing.assert_close(
        out[:, 3:],
        nn.functional.batch_norm(x[:, 3:], None, None, training=True))


def test_frozen_stages_freeze_instance_norms():
    model = IBNResNet(depth=50, frozen_stages=1)
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert model.layer2[0].norm1.IN.weight.requires_grad


@pytest.mark.parametrize('kwargs, message', [
    (dict(depth=34), 'depth must be'),
    (dict(depth=152), 'depth must be'),
    (dict(depth=50, ibn='b'), 'ibn must be'),
])
def test_refuses_unsupported_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MODELS.build(dict(type='mmcc.IBNResNet', **kwargs))


# ---------------------------------------------------------------------------
# Conversion and parity


def test_public_checkpoint_converts_to_same_outputs(reference,
                                                    public_state_dict,
                                                    tmp_path, capsys):
    src = tmp_path / 'resnet50_ibn_a.pth'
    dst = tmp_path / 'resnet50_ibn_a_mmcc.pth'
    torch.save(public_state_dict, src)
    assert converter.main([str(src), str(dst), '--verify']) == 0
    assert 'OK: strict load' in capsys.readouterr().out

    converted = torch.load(
        dst, map_location='cpu', weights_only=True)['state_dict']
    assert not any(key.startswith('fc.') for key in converted)
    # the way configs load it: Pretrained init_cfg on the backbone
    model = MODELS.build(
        dict(
            type='mmcc.IBNResNet',
            depth=50,
            strides=REID_STRIDES,
            out_indices=(0, 1, 2, 3),
            init_cfg=dict(type='Pretrained', checkpoint=str(dst))))
    model.init_weights()
    # Pretrained loading is not strict: check nothing was left out
    assert set(model.state_dict()) == set(converted)
    for key, value in model.state_dict().items():
        assert torch.equal(value, converted[key]), key

    model.eval()
    inputs = torch.randn(
        INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(inputs)
        actual = model(inputs)
    assert expected[-1].abs().max() > 0.1  # not a trivially small output
    for stage, (want, got) in enumerate(zip(expected, actual), start=1):
        torch.testing.assert_close(
            got, want, rtol=1e-5, atol=1e-5, msg=f'layer{stage}')


def test_nested_data_parallel_checkpoint(public_state_dict):
    wrapped = {
        'state_dict': {
            f'module.{key}': value
            for key, value in public_state_dict.items()
        },
        'epoch': 90
    }
    source = converter.extract_state_dict(wrapped)
    assert list(source) == list(public_state_dict)
    converted = converter.convert(source, prefix='backbone.')
    assert all(key.startswith('backbone.') for key in converted)
    assert 'backbone.layer4.2.bn3.running_var' in converted


def test_missing_batch_counters_are_filled(public_state_dict, ibn_resnet50):
    source = {
        key: value
        for key, value in public_state_dict.items()
        if not key.endswith('num_batches_tracked')
    }
    converted = converter.convert(source)
    assert converted['layer1.0.bn1.BN.num_batches_tracked'] == 0
    assert set(converted) == set(ibn_resnet50.state_dict())


def test_refuses_missing_key(public_state_dict):
    source = dict(public_state_dict)
    del source['layer2.1.bn1.IN.bias']
    with pytest.raises(
            converter.CheckpointKeyError,
            match=r'missing keys: layer2\.1\.bn1\.IN\.bias'):
        converter.convert(source)


def test_refuses_unexpected_key(public_state_dict):
    # IBN-a has no IBN in stage 4
    source = dict(public_state_dict,
                  **{'layer4.0.bn1.IN.weight': torch.ones(256)})
    with pytest.raises(
            converter.CheckpointKeyError,
            match=r'unexpected keys: layer4\.0\.bn1\.IN\.weight'):
        converter.convert(source)


def test_cli_names_the_bad_key(tmp_path):
    src = tmp_path / 'not_ibn.pth'
    dst = tmp_path / 'out.pth'
    torch.save({'model': {'classifier.weight': torch.zeros(2, 2)}}, src)
    with pytest.raises(SystemExit, match=r'classifier\.weight'):
        converter.main([str(src), str(dst), '--depth', '50'])
    assert not dst.exists()
