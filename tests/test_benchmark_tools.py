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
