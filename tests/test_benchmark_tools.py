"""The scale benchmarks run end to end on tiny inputs and print what they
claim to (their figures are measured by hand; here only that they work)."""
import os.path as osp
import runpy
import sys

import pytest

from mmcc.clustering import knn as knn_module

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _run(script, argv, monkeypatch):
    monkeypatch.setattr(sys, 'argv', [script] + argv)
    runpy.run_path(
        osp.join(ROOT, 'tools', 'analysis_tools', script), run_name='__main__')


def test_memory_format_benchmark_compares_both_layouts(monkeypatch, capsys):
    _run('benchmark_memory_format.py',
         ['--size', '32', '16', '--batch-size', '2', '--steps', '1'],
         monkeypatch)
    out = capsys.readouterr().out
    assert 'CPU flags' in out
    rows = [r.split() for r in out.splitlines() if r.startswith('  ')]
    # three variants of each pass, each with img/s and a ratio to the first
    assert [r[0] for r in rows] == ['embed'] * 3 + ['train'] * 3
    assert ' '.join(rows[2]).startswith('embed channels-last + folded BN')
    assert ' '.join(
        rows[5]).startswith('train channels-last + PreciseBatchNorm2d')
    for row in rows:
        assert row[-2] == 'img/s' and float(row[-3]) > 0
    assert rows[0][-1] == rows[3][-1] == 'x1.00'


@pytest.mark.skipif(not knn_module.faiss_available(), reason='needs faiss')
def test_ivf_calibration_benchmark_reports_recall_per_nprobe(
        monkeypatch, capsys):
    _run('benchmark_ivf_calibration.py', [
        '--size', '3000', '--dim', '64', '--pca-dim', '32', '--exact-rows',
        '50', '--timed-cells', '5', '--max-nprobe', '16'
    ], monkeypatch)
    out = capsys.readouterr().out
    rows = [r for r in out.splitlines() if r.startswith('nprobe')]
    assert [int(r.split()[1].rstrip(':')) for r in rows] == [8, 16]
    recalls = [float(r.split('recall@30 ')[1].split(';')[0]) for r in rows]
    assert 0 < recalls[0] <= recalls[1] <= 1
    assert 'peak RSS' in out


def _load(script):
    return runpy.run_path(
        osp.join(ROOT, 'tools', 'analysis_tools', script), run_name='tool')


def test_projection_screen_bounds_every_product_from_above():
    # Rows of uneven norm with a dominant coordinate, and a spectrum that
    # leaves sizeable residuals outside the kept directions.
    import numpy as np
    import torch
    features = _load('benchmark_knn_screen.py')['projection_screen_features']
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 256)) * np.linspace(3, 0.1, 256)
    x *= rng.uniform(0.2, 3.0, (300, 1))
    x[:20, 0] += 40
    x = x.astype(np.float32)
    truth = x.astype(np.float64) @ x.T.astype(np.float64)
    u, base = features(torch.from_numpy(x), 16)
    assert u.shape == (300, 17) and u.dtype == torch.float32
    screen = (u @ u.T).double().numpy()
    assert (screen + base.double().numpy()[:, None] >= truth).all()
    # the residuals matter here (the bound is more than rounding), and the
    # rounding allowance is small against the products
    assert (screen - truth).max() > 1.0
    assert (base.numpy() <= 1e-4 * np.abs(truth).max()).all()
    # rank-8 rows with d = 8: no residual, only rounding, two-sided
    x = (rng.standard_normal((200, 8)) @ rng.standard_normal((8, 64)))
    x = x.astype(np.float32)
    truth = x.astype(np.float64) @ x.T.astype(np.float64)
    u, base = features(torch.from_numpy(x), 8)
    screen = (u @ u.T).double().numpy()
    assert (np.abs(screen - truth) <= base.double().numpy()[:, None]).all()


@pytest.mark.skipif(not knn_module.faiss_available(), reason='needs faiss')
def test_knn_screen_benchmark_matches_the_float32_lists(monkeypatch, capsys):
    _run('benchmark_knn_screen.py', [
        '--size', '1500', '--dim', '64', '--projection-dims', '16', '--extras',
        '32', '400'
    ], monkeypatch)
    out = capsys.readouterr().out
    assert 'float32 brute force' in out
    rows = [r for r in out.splitlines() if r.startswith('projection')]
    assert len(rows) == 2
    redone = [int(r.split('; ')[1].split()[0]) for r in rows]
    # more candidates, fewer rows left to the float32 search
    assert redone[0] >= redone[1]
    for row in out.splitlines():
        if 'ids equal' in row:
            assert float(row.split('float32 lists: ')[1].split(',')[0]) == 1.0
