"""tools/deployment/export_onnx.py: the ONNX embedder computes what the
PyTorch model computes, at any batch size."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

import cv2
import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
# the demo config and its random checkpoint, shared with the API's tests
from test_inference import DEMO_CONFIG, ROOT, save_random_checkpoint

from mmcc.apis import embed_images, init_model
from mmcc.registry import MODELS

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')  # the dynamo exporter's translator

TOOL = osp.join(ROOT, 'tools', 'deployment', 'export_onnx.py')
ATOL = 1e-4
INTERPOLATION = dict(
    nearest=cv2.INTER_NEAREST,
    bilinear=cv2.INTER_LINEAR,
    bicubic=cv2.INTER_CUBIC,
    area=cv2.INTER_AREA,
    lanczos=cv2.INTER_LANCZOS4)


def _load_tool():
    spec = importlib.util.spec_from_file_location('_tool_export_onnx', TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


export_tool = _load_tool()

# tiny convolutions: one thread (conftest.single_thread)
pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.fixture(scope='module')
def exported(tmp_path_factory, tiny_synthetic):
    """The CLI run once, with --verify: (onnx path, checkpoint, process)."""
    tmp = tmp_path_factory.mktemp('onnx')
    ckpt = str(tmp / 'random.pth')
    save_random_checkpoint(ckpt, osp.join(tiny_synthetic,
                                          'bounding_box_train'))
    out = str(tmp / 'reid.onnx')
    proc = subprocess.run(
        [sys.executable, TOOL, DEMO_CONFIG, ckpt, '--out', out, '--verify'],
        cwd=str(tmp),
        env=dict(os.environ, OMP_NUM_THREADS='1'),
        capture_output=True,
        text=True,
        timeout=600)
    return out, ckpt, proc


def test_verify_cli_passes(exported):
    out, _, proc = exported
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'batch 1:' in proc.stdout and 'batch 3:' in proc.stdout
    assert 'verified' in proc.stdout
    assert osp.isfile(out) and not osp.exists(out + '.data')


def test_graph_input_has_a_dynamic_batch_dim(exported):
    out = exported[0]
    model = onnx.load(out)
    onnx.checker.check_model(model)
    (inp, ), (outp, ) = model.graph.input, model.graph.output
    assert (inp.name, outp.name) == ('images', 'embeddings')
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField('dim_value')
    assert [d.dim_value for d in dims[1:]] == [3, 128, 64]
    out_dims = outp.type.tensor_type.shape.dim
    assert out_dims[0].dim_param and out_dims[1].dim_value == 1280
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta['mmcc_input_size'] == '128,64'
    assert meta['mmcc_interpolation'] == 'bilinear'


def _onnx_inputs(session, bgr_images):
    """The README's recipe: BGR -> RGB, resize to the graph's H x W with
    the config's interpolation, stack as float32 (B, 3, H, W) 0-255."""
    _, _, height, width = session.get_inputs()[0].shape
    meta = session.get_modelmeta().custom_metadata_map
    flag = INTERPOLATION[meta['mmcc_interpolation']]
    crops = [
        cv2.resize(
            cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (width, height),
            interpolation=flag) for img in bgr_images
    ]
    return np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32)


def test_onnx_equals_pytorch_on_images(exported, tiny_synthetic):
    out, ckpt, _ = exported
    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    model = init_model(DEMO_CONFIG, ckpt, device='cpu')
    folder = osp.join(tiny_synthetic, 'query')
    images = [
        mmcv.imread(osp.join(folder, name))
        for name in sorted(os.listdir(folder))[:4]
    ]
    diffs = {}
    for batch, chunk in ((1, images[:1]), (3, images[1:4])):
        got = session.run(['embeddings'],
                          {'images': _onnx_inputs(session, chunk)})[0]
        expected = embed_images(model, chunk)
        assert got.shape == expected.shape == (batch, 1280)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
        diffs[batch] = float(np.abs(got - expected).max())
    print(f'ONNX vs PyTorch max abs difference: {diffs}')
    assert max(diffs.values()) <= ATOL, diffs


@pytest.mark.parametrize('to_rgb', [True, False])
def test_embedder_applies_the_preprocessor(to_rgb):
    """The graph's module takes RGB 0-255 and does what the preprocessor
    and forward(mode='tensor') do with the BGR images mmcv loads, also for
    a model trained on BGR (to_rgb=False)."""
    cfg = Config.fromfile(DEMO_CONFIG).model
    cfg.backbone.init_cfg = None
    cfg.pop('head')
    cfg.data_preprocessor = dict(
        type='mmpretrain.ClsDataPreprocessor',
        mean=[10., 120., 200.],
        std=[50., 60., 70.],
        to_rgb=to_rgb)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmcc'):
        model = MODELS.build(cfg).eval()
    bgr = torch.randint(0, 256, (2, 3, 32, 16), dtype=torch.uint8)
    with torch.no_grad():
        inputs = model.data_preprocessor({'inputs': list(bgr)},
                                         False)['inputs']
        expected = model(inputs, mode='tensor')
        got = export_tool.ONNXEmbedder(model).eval()(bgr.flip(1).float())
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_input_size_from_the_test_resize():
    cfg = Config.fromfile(DEMO_CONFIG)
    assert export_tool.test_input_size(cfg) == (128, 64)
    cfg.test_dataloader.dataset.pipeline[1]['scale'] = 96
    assert export_tool.test_input_size(cfg) == (96, 96)
    cfg.test_dataloader.dataset.pipeline[1]['keep_ratio'] = True
    with pytest.raises(ValueError, match='--shape'):
        export_tool.test_input_size(cfg)


def test_verify_fails_above_the_tolerance(exported, monkeypatch, capsys):
    """--verify exits 1 when onnxruntime and PyTorch differ by more than
    1e-4 (export and comparison stubbed: the exit path only)."""
    _, ckpt, _ = exported
    monkeypatch.setattr(export_tool, 'export', lambda *a, **k: None)
    monkeypatch.setattr(export_tool, 'add_metadata', lambda *a, **k: None)
    monkeypatch.setattr(export_tool, 'verify', lambda *a, **k: {
        1: 1e-6,
        3: 2e-4
    })
    argv = [DEMO_CONFIG, ckpt, '--out', 'unused.onnx', '--verify']
    assert export_tool.main(argv) == 1
    assert 'FAILED' in capsys.readouterr().err
