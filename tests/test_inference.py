"""mmcc.apis.init_model / embed_images and tools/embed_folder.py embed as
the Runner's test loop does."""
import os
import os.path as osp
import subprocess
import sys

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mmcc.apis import embed_images, extract_features, init_model
from mmcc.registry import MODELS
from mmcc.utils import register_all_modules

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(
    ROOT, 'configs/cluster_contrast/'
    'cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py')
ATOL = 1e-5

# tiny convolutions: one thread (conftest.single_thread)
pytestmark = pytest.mark.usefixtures('single_thread')


def save_random_checkpoint(path, image_folder, seed=0):
    """A randomly initialised demo model (with its training head) saved as
    ``{'state_dict': ...}``. Its BN running statistics are those of the
    images of ``image_folder`` (one forward pass in training mode), so that
    the random network tells images apart and a BN left in training mode,
    or not loaded, shows."""
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmcc'):
        model = MODELS.build(cfg.model)
    paths = sorted(os.listdir(image_folder))[:16]
    images = [
        torch.from_numpy(
            mmcv.imresize(mmcv.imread(osp.join(image_folder, p)),
                          (64, 128)).transpose(2, 0, 1).copy()) for p in paths
    ]
    inputs = model.data_preprocessor({'inputs': images}, False)['inputs']
    norms = [
        m for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a plain average of this pass
    model.train()
    with torch.no_grad():
        model(inputs, mode='tensor')
    for bn in norms:
        bn.momentum = 0.1
    state_dict = model.state_dict()
    torch.save({'state_dict': state_dict}, path)
    return state_dict


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory, tiny_synthetic):
    path = str(tmp_path_factory.mktemp('ckpt') / 'random.pth')
    train = osp.join(tiny_synthetic, 'bounding_box_train')
    return path, save_random_checkpoint(path, train)


@pytest.fixture(scope='module')
def model(checkpoint):
    return init_model(DEMO_CONFIG, checkpoint[0])


@pytest.fixture(scope='module')
def query_paths(tiny_synthetic):
    folder = osp.join(tiny_synthetic, 'query')
    return sorted(osp.join(folder, name) for name in os.listdir(folder))


def test_init_model_loads_the_checkpoint(model, checkpoint):
    _, saved = checkpoint
    assert not model.training and model.head is None
    assert model.cfg.test_dataloader.dataset.pipeline
    expected = 'cuda' if torch.cuda.is_available() else 'cpu'
    assert next(model.parameters()).device.type == expected
    state = model.state_dict()
    assert set(state) == {k for k in saved if not k.startswith('head.')}
    for key, value in state.items():
        assert torch.equal(value.cpu(), saved[key]), key


def test_init_model_never_reads_the_pretrained_weights(checkpoint,
                                                       monkeypatch):
    """With a checkpoint, a Pretrained backbone init_cfg (here a URL) is
    dropped: nothing is downloaded."""

    def no_download(*args, **kwargs):
        raise AssertionError('init_model tried to download')

    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_download)
    url = 'https://example.invalid/mobilenetv2.pth'
    model = init_model(
        DEMO_CONFIG,
        checkpoint[0],
        device='cpu',
        cfg_options={'model.backbone.init_cfg.checkpoint': url})
    assert 'Pretrained' not in str(model.backbone.init_cfg)


def test_a_checkpoint_of_another_model_is_refused(checkpoint, tmp_path):
    _, saved = checkpoint
    partial = {k: v for k, v in saved.items() if not k.startswith('neck.')}
    path = str(tmp_path / 'partial.pth')
    torch.save({'state_dict': partial}, path)
    with pytest.raises(RuntimeError, match='neck'):
        init_model(DEMO_CONFIG, path, device='cpu')


def test_paths_arrays_and_batch_sizes_agree(model, query_paths):
    feats = embed_images(model, query_paths, batch_size=4)
    assert feats.dtype == np.float32
    assert feats.shape == (len(query_paths), model.neck.out_channels)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1, atol=ATOL)
    # the random network tells the images apart
    cosine = feats @ feats.T
    assert cosine[~np.eye(len(feats), dtype=bool)].min() < 0.9

    bgr = [mmcv.imread(p) for p in query_paths]
    np.testing.assert_allclose(
        embed_images(model, bgr, batch_size=4), feats, atol=ATOL)
    np.testing.assert_allclose(
        embed_images(model, query_paths, batch_size=1), feats, atol=ATOL)
    rgb = [img[..., ::-1] for img in bgr]
    np.testing.assert_allclose(
        embed_images(model, rgb, batch_size=3, channel_order='rgb'),
        feats,
        atol=ATOL)
    # one path or one array
    np.testing.assert_allclose(
        embed_images(model, query_paths[2]), feats[2:3], atol=ATOL)
    np.testing.assert_allclose(
        embed_images(model, bgr[2]), feats[2:3], atol=ATOL)


def test_equals_the_runner_test_loop(model, tiny_synthetic):
    """The embeddings extract_features computes over the Runner's own
    loader of the config's test pipeline (as tools/test.py and the
    pseudo-label hook do)."""
    cfg = model.cfg.test_dataloader.copy()
    cfg.update(batch_size=4, num_workers=0, persistent_workers=False)
    cfg.dataset.update(data_root=tiny_synthetic, split='query')
    with DefaultScope.overwrite_default_scope('mmcc'):
        loader = Runner.build_dataloader(cfg)
    expected = extract_features(model, loader, progress=False).numpy()
    paths = [
        loader.dataset.get_data_info(i)['img_path']
        for i in range(len(loader.dataset))
    ]
    np.testing.assert_allclose(
        embed_images(model, paths, batch_size=3), expected, atol=ATOL)


def test_training_mode_is_restored_and_ignored(model, query_paths):
    expected = embed_images(model, query_paths[:4])
    model.train()
    try:
        np.testing.assert_allclose(
            embed_images(model, query_paths[:4], batch_size=2),
            expected,
            atol=ATOL)
        assert model.training
    finally:
        model.eval()


def test_bad_inputs(model):
    with pytest.raises(ValueError, match='uint8'):
        embed_images(model, [np.zeros((8, 4, 3), np.float32)])
    with pytest.raises(ValueError, match='HxWx3'):
        embed_images(model, [np.zeros((8, 4), np.uint8)])
    with pytest.raises(ValueError, match='channel_order'):
        embed_images(model, [], channel_order='RGB')
    assert embed_images(model, []).shape == (0, model.neck.out_channels)


def test_embed_folder_tool(checkpoint, tiny_synthetic, query_paths, tmp_path):
    folder = osp.join(tiny_synthetic, 'query')
    out = str(tmp_path / 'out' / 'feats.npy')
    query = query_paths[3]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools/embed_folder.py'), DEMO_CONFIG, checkpoint[0],
        folder, '--out', out, '--query', query, '--topk', '3', '--batch-size',
        '4', '--device', 'cpu'
    ],
                          cwd=str(tmp_path),
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    feats = np.load(out)
    with open(str(tmp_path / 'out' / 'feats.txt')) as f:
        listed = f.read().splitlines()
    assert listed == query_paths
    assert feats.shape == (len(query_paths), 1280)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1, atol=ATOL)

    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if 'nearest' in line)
    ranked = [line.split() for line in lines[start + 1:start + 4]]
    assert [r[0] for r in ranked] == ['1', '2', '3']
    assert ranked[0][2] == query and abs(float(ranked[0][1])) < 1e-5
    assert all(float(r[1]) > 1e-4 for r in ranked[1:])
