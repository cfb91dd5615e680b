"""Recall and projected time of the cell join of ``knn='ivf'`` at large N.

At N = 10^6 a full approximate search takes minutes per setting; this
script builds the cells exactly as ``knn='ivf'`` does
(:func:`mmcc.clustering.knn_ivf.ivf_search`: PCA, k-means cells, the join's
operands), then, for nprobe = 8, 16, 32, ..., measures recall@k (after
exact re-scoring, before refinement) of a sample of rows against an exact
search of them, and projects the full join's time from the time of whole
sampled cells. It prints the time and peak RSS (VmHWM) of each stage and
the CPU's vector extensions.

    python tools/analysis_tools/benchmark_ivf_calibration.py --size 1000000
"""
import argparse
import math
import os
import time

import numpy as np

from mmcc.clustering import knn_ivf
from mmcc.testing.embeddings import make_reid_embeddings
from mmcc.utils.host import cpu_vector_flags, process_memory


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=1000000)
    parser.add_argument('--dim', type=int, default=2048)
    parser.add_argument('--k', type=int, default=30)
    parser.add_argument('--exact-rows', type=int, default=256)
    parser.add_argument('--timed-cells', type=int, default=64)
    parser.add_argument('--max-nprobe', type=int, default=1024)
    parser.add_argument('--pca-dim', type=int, default=knn_ivf.PCA_DIM)
    parser.add_argument(
        '--candidates-per-k', type=int, default=knn_ivf.CANDIDATES_PER_K)
    parser.add_argument(
        '--product-dtype',
        default='auto',
        choices=['auto', 'float32', 'bfloat16'])
    args = parser.parse_args()
    print(
        f'CPU {cpu_vector_flags()}; {os.cpu_count()} cpus; load average '
        f'{os.getloadavg()[0]:.2f} at start',
        flush=True)
    tic = time.perf_counter()
    x, _ = make_reid_embeddings(args.size, args.dim)
    n = len(x)
    print(
        f'N={n} D={args.dim}: generated in {time.perf_counter() - tic:.0f}'
        f' s, RSS {process_memory("VmRSS") / 2**30:.2f} GiB',
        flush=True)
    rng = np.random.default_rng(0)
    tic = time.perf_counter()
    z = knn_ivf.project(x, args.pca_dim, knn_ivf.PCA_TRAIN_ROWS, rng)
    print(
        f'PCA to {z.shape[1]}: {time.perf_counter() - tic:.0f} s', flush=True)
    import faiss
    tic = time.perf_counter()
    nlist = max(
        1,
        min(
            int(knn_ivf.CELLS_PER_SQRT_N * math.sqrt(n)),
            n // knn_ivf.MIN_TRAIN_PER_CELL))
    centroids, assign = knn_ivf.train_cells(z, nlist, rng)
    dtype = knn_ivf._product_dtype(args.product_dtype)
    join = knn_ivf.CellJoin(z, centroids, assign, dtype)
    del z
    print(
        f'cells: nlist {nlist}, k-means and join set-up '
        f'{time.perf_counter() - tic:.0f} s; products in {dtype}',
        flush=True)
    rows = knn_ivf._sample(n, args.exact_rows, rng)
    tic = time.perf_counter()
    _, exact = faiss.knn(
        np.ascontiguousarray(x[rows]),
        x,
        args.k,
        metric=faiss.METRIC_INNER_PRODUCT)
    print(
        f'exact search of {len(rows)} rows: '
        f'{time.perf_counter() - tic:.1f} s (all {n} rows at that rate: '
        f'{(time.perf_counter() - tic) * n / len(rows) / 3600:.1f} h)',
        flush=True)
    timed = knn_ivf._sample(nlist, args.timed_cells, rng)
    m = min(n, args.candidates_per_k * args.k)
    nprobe = 8
    while nprobe <= min(nlist, args.max_nprobe):
        ids, _ = knn_ivf._best(x, rows, join.candidates_of(rows, nprobe, m),
                               args.k)
        recall = knn_ivf._recall(ids, exact)
        # the join's time: whole cells, as the full join runs them
        tic = time.perf_counter()
        for cell in timed:
            lo, hi = join.bounds[cell], join.bounds[cell + 1]
            join._top(np.arange(lo, hi), cell, nprobe, m)
        took = time.perf_counter() - tic
        print(
            f'nprobe {nprobe:5d}: recall@{args.k} {recall:.4f}; '
            f'{took / len(timed) * 1e3:.1f} ms a cell, full join projected '
            f'{took * nlist / len(timed) / 60:.1f} min',
            flush=True)
        nprobe *= 2
    print(f'peak RSS {process_memory("VmHWM") / 2**30:.2f} GiB')


if __name__ == '__main__':
    main()
