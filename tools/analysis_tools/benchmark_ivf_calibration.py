"""Recall and projected time of the inverted-file kNN at large N.

At N = 10^6 a full approximate search may take longer than one is willing
to wait; this script builds the index exactly as ``knn='ivf'`` does
(:func:`mmcc.clustering.knn_ivf.ivf_search`: PCA, k-means cells), then, for
nprobe = 8, 16, 32, ..., searches a sample of rows, measures recall@k
against an exact search of a smaller sample, and projects the full search
time from the sample's time per query. It prints the time and peak RSS
(VmHWM) of each stage and the CPU's vector extensions.

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
    parser.add_argument('--timed-rows', type=int, default=4096)
    parser.add_argument('--max-nprobe', type=int, default=1024)
    parser.add_argument('--pca-dim', type=int, default=knn_ivf.PCA_DIM)
    parser.add_argument(
        '--candidates-per-k', type=int, default=knn_ivf.CANDIDATES_PER_K)
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
    index = faiss.IndexIVFFlat(
        faiss.IndexFlatL2(z.shape[1]), z.shape[1], nlist, faiss.METRIC_L2)
    sample = knn_ivf._sample(n, knn_ivf.TRAIN_PER_CELL * nlist, rng)
    index.train(np.ascontiguousarray(z[sample]))
    for start in range(0, n, knn_ivf.SEARCH_CHUNK_ROWS):
        index.add(
            np.ascontiguousarray(z[start:start + knn_ivf.SEARCH_CHUNK_ROWS]))
    print(
        f'index: nlist {nlist}, {time.perf_counter() - tic:.0f} s', flush=True)
    rows = knn_ivf._sample(n, args.timed_rows, rng)
    exact_rows = rows[:args.exact_rows]
    tic = time.perf_counter()
    _, exact = faiss.knn(
        np.ascontiguousarray(x[exact_rows]),
        x,
        args.k,
        metric=faiss.METRIC_INNER_PRODUCT)
    print(
        f'exact search of {len(exact_rows)} rows: '
        f'{time.perf_counter() - tic:.1f} s (all {n} rows at that rate: '
        f'{(time.perf_counter() - tic) * n / len(exact_rows) / 3600:.1f} '
        'h)',
        flush=True)
    nprobe = 8
    while nprobe <= min(nlist, args.max_nprobe):
        index.nprobe = nprobe
        tic = time.perf_counter()
        ids, _ = knn_ivf._search_rows(index, x, z, rows,
                                      args.candidates_per_k * args.k, args.k)
        took = time.perf_counter() - tic
        recall = knn_ivf._recall(ids[:len(exact_rows)], exact)
        print(
            f'nprobe {nprobe:5d}: recall@{args.k} {recall:.4f}; '
            f'{took / len(rows) * 1e3:.2f} ms a query, full search '
            f'projected {took * n / len(rows) / 60:.1f} min',
            flush=True)
        nprobe *= 2
    print(f'peak RSS {process_memory("VmHWM") / 2**30:.2f} GiB')


if __name__ == '__main__':
    main()
