"""``mim train/test mmcc CONFIG`` find our tools and configs in ``mmcc/.mim``.

setup.py fills ``mmcc/.mim`` with ``tools/`` and ``configs/``: copies
inside a wheel (``BuildPyWithMim``), symlinks to the checkout for the
development install ``make setup`` makes (``DevelopWithMim``). Nothing
is written into site-packages besides what pip installs and records.
"""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import util

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(
    osp.relpath(osp.join(folder, name), osp.join(ROOT, 'configs'))
    for folder, _, names in os.walk(osp.join(ROOT, 'configs'))
    for name in names if name.endswith('.py'))
# Left out of the copy a test wheel is built from.
NOT_SOURCES = ('.venv', '.git', 'data', 'work_dirs', 'checkpoints', 'build',
               'dist', '*.egg-info', '.mim', '__pycache__', '*.pyc')


def installed_editable() -> bool:
    """Whether the mmcc that imports is the checkout's (``pip install -e``,
    as ``make setup`` does it, or a PEP 660 editable install)."""
    spec = util.find_spec('mmcc')
    return spec is not None and osp.samefile(
        osp.dirname(spec.origin), osp.join(ROOT, 'mmcc'))


def mim_installed_path(env=None) -> str:
    """``mim.utils.get_installed_path('mmcc')``, in a fresh interpreter
    (mim caches what pkg_resources found when it was imported)."""
    code = ('import warnings; warnings.simplefilter("ignore"); '
            'from mim.utils import get_installed_path; '
            'print(get_installed_path("mmcc"))')
    # not from the checkout: its mmcc.egg-info would be found first
    out = subprocess.run([sys.executable, '-c', code],
                         cwd=osp.dirname(ROOT),
                         env=env,
                         check=True,
                         capture_output=True,
                         text=True)
    return out.stdout.strip()


editable_only = pytest.mark.skipif(
    not installed_editable(), reason='mmcc is not installed editable')


@editable_only
def test_editable_install_links_the_checkouts_tools_and_configs():
    pkg_root = osp.dirname(util.find_spec('mmcc').origin)
    assert osp.samefile(pkg_root, osp.join(ROOT, 'mmcc'))
    mim_path = osp.join(pkg_root, '.mim')
    for name in ('tools', 'configs'):
        link, target = osp.join(mim_path, name), osp.join(ROOT, name)
        assert osp.islink(link) and osp.samefile(link, target), name
    assert osp.samefile(
        osp.join(mim_path, 'tools', 'train.py'),
        osp.join(ROOT, 'tools', 'train.py'))
    # mim looks a config name up under the package, following links; each
    # one a user would train with must be found once (mim refuses a name
    # found twice; some _base_ files share a name with a module)
    mim_utils = pytest.importorskip('mim.utils')
    for rel in CONFIGS:
        if rel.startswith('_base_'):
            continue
        found = mim_utils.recursively_find(
            pkg_root, osp.basename(rel), followlinks=True)
        assert len(found) == 1, (rel, found)
        assert osp.samefile(found[0], osp.join(ROOT, 'configs', rel))
    # no link or folder behind pip's back (the old Makefile made one)
    purelib = sysconfig.get_paths()['purelib']
    assert not osp.lexists(osp.join(purelib, 'mmcc')), (
        f'{purelib}/mmcc is not pip\'s: remove it (rm {purelib}/mmcc)')


@editable_only
def test_mim_trains_and_tests_the_development_install(tmp_path,
                                                      tiny_synthetic):
    """``make setup``'s install: mim finds the checkout's tools through the
    links, and ``mim train mmcc`` / ``mim test mmcc`` run a config by name.
    """
    pytest.importorskip('mim')
    pkg_root = mim_installed_path()
    assert osp.samefile(pkg_root, osp.join(ROOT, 'mmcc'))
    data = tiny_synthetic
    config = 'cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py'
    options = ['model.backbone.init_cfg=None'] + [
        f'{key}.dataset.data_root={data}'
        for key in ('train_dataloader', 'cluster_dataloader', 'val_dataloader',
                    'test_dataloader')
    ]
    mim = [osp.join(osp.dirname(sys.executable), 'mim')]
    work = tmp_path / 'work'
    subprocess.run(
        mim + [
            'train', 'mmcc', config, '--work-dir',
            str(work), '--cfg-options', 'train_cfg.max_epochs=1',
            'train_cfg.val_interval=1', 'train_dataloader.batch_size=16',
            'train_dataloader.sampler.iters_per_epoch=1',
            'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False',
            'default_hooks.checkpoint.interval=1'
        ] + options,
        cwd=tmp_path,
        check=True,
        capture_output=True)
    assert (work / 'epoch_1.pth').is_file()
    out = tmp_path / 'metrics.json'
    subprocess.run(
        mim + [
            'test', 'mmcc', config, '--checkpoint',
            str(work / 'epoch_1.pth'), '--work-dir',
            str(tmp_path / 'test'), '--out',
            str(out), '--cfg-options'
        ] + options,
        cwd=tmp_path,
        check=True,
        capture_output=True)
    metrics = json.loads(out.read_text())
    assert 0.0 <= metrics['reid/mAP'] <= 100.0


@pytest.mark.slow
def test_wheel_carries_tools_and_configs_where_mim_looks(tmp_path):
    """Build a wheel from (a copy of) the checkout, install it into a
    scratch folder and ask mim where mmcc is.

    The copy keeps the checkout free of ``build/`` and ``*.egg-info`` and
    lets two builds run at once.
    """
    src, dist, site = tmp_path / 'src', tmp_path / 'dist', tmp_path / 'site'
    shutil.copytree(
        ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    pip = [sys.executable, '-m', 'pip', '-q']
    build = ['wheel', '--no-deps', '--no-build-isolation', '-w', str(dist)]
    subprocess.run(pip + build + ['.'], cwd=src, check=True)
    (wheel, ) = dist.glob('mmcc-*.whl')
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for tool in ('train.py', 'test.py'):
            with open(osp.join(ROOT, 'tools', tool), 'rb') as f:
                assert archive.read(f'mmcc/.mim/tools/{tool}') == f.read()
    missing = [
        rel for rel in CONFIGS if f'mmcc/.mim/configs/{rel}' not in names
    ]
    assert not missing
    assert not any('__pycache__' in name for name in names)

    pytest.importorskip('mim')
    install = ['install', '--no-deps', '--target', str(site), str(wheel)]
    subprocess.run(pip + install, check=True)
    env = dict(os.environ, PYTHONPATH=str(site))  # ahead of site-packages
    pkg_root = mim_installed_path(env)
    assert osp.samefile(pkg_root, site / 'mmcc')
    assert osp.isfile(osp.join(pkg_root, '.mim', 'tools', 'train.py'))
    assert osp.isfile(osp.join(pkg_root, '.mim', 'configs', CONFIGS[0]))


def test_mmpretrain_tools_train_mmcc_configs(tmp_path, tiny_synthetic):
    """The host toolbox's own tools (``mim train mmpretrain``) run an mmcc
    config once mmcc is imported: the pseudo-label hook clusters, the
    memory head trains and the re-ID metric evaluates."""
    pytest.importorskip('mim')
    config = osp.join(
        ROOT, 'configs', 'cluster_contrast',
        'cluster-contrast_mobilenetv2_dbscan_1xb64-14e_synthetic.py')
    work = tmp_path / 'work'
    subprocess.run(
        [
            osp.join(osp.dirname(sys.executable),
                     'mim'), 'train', 'mmpretrain', config, '--work-dir',
            str(work), '--cfg-options', 'custom_imports.imports=[mmcc]',
            'model.backbone.init_cfg=None', 'train_cfg.max_epochs=1',
            'train_cfg.val_interval=1', 'train_dataloader.batch_size=16',
            'train_dataloader.sampler.iters_per_epoch=1',
            'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False'
        ] + [
            f'{key}.dataset.data_root={tiny_synthetic}'
            for key in ('train_dataloader', 'cluster_dataloader',
                        'val_dataloader', 'test_dataloader')
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True)
    log = open(next(work.rglob('*.log'))).read()
    assert 'Pseudo-labels: num_clusters=' in log
    assert 'reid/mAP' in log


def test_model_index_lists_every_config_and_mim_search_finds_them():
    """model-index.yml -> configs/cluster_contrast/metafile.yml names each
    training config once, with a config file that exists; `mim search mmcc`
    lists them. The ablation arms (``cluster_contrast/ablations/``) are
    experiments, not models to pick, and stay out of the index."""
    import yaml
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        (metafile, ) = yaml.safe_load(f)['Import']
    with open(osp.join(ROOT, metafile)) as f:
        models = yaml.safe_load(f)['Models']
    ablations = osp.join('cluster_contrast', 'ablations') + os.sep
    on_disk = sorted(
        rel for rel in CONFIGS
        if rel.startswith('cluster_contrast' +
                          os.sep) and not rel.startswith(ablations))
    assert len(on_disk) < len([c for c in CONFIGS if '_base_' not in c])
    listed = sorted(osp.relpath(m['Config'], 'configs') for m in models)
    assert listed == on_disk
    assert all(m['Name'] == osp.splitext(osp.basename(m['Config']))[0]
               for m in models)
    if not installed_editable():
        return
    out = subprocess.run(
        [osp.join(osp.dirname(sys.executable), 'mim'), 'search', 'mmcc'],
        cwd=osp.dirname(ROOT),
        check=True,
        capture_output=True,
        text=True).stdout
    for model in models:
        assert f'config id: {model["Name"]}\n' in out, model['Name']
