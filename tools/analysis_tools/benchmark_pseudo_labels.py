"""Benchmark the pseudo-labelling step: dense naive baseline vs sparse path.

For every N of ``--sizes`` it makes seeded synthetic L2-normalised embeddings
with identity structure (identities of varying size, several "cameras" per
identity, look-alike identities, outliers), then runs, in one process:

* the sparse path: :func:`mmcc.clustering.jaccard_distance` +
  ``dbscan_labels``;
* the dense baseline ("dense" below):
  :func:`mmcc.testing.naive_k_reciprocal.naive_jaccard_distance` (the
  reference implementation's N x N computation, loop by loop) +
  ``dbscan_labels``, skipped when its estimated memory does not fit in the
  machine's available memory.

Both share nothing but the input: each runs its own kNN search. The dense
baseline runs the reference's search, float32 brute force (faiss when
installed, ``--dense-knn exact``); the sparse path runs ``--knn`` (default
``auto``: on CPUs that multiply bfloat16 natively, the screened exact search
of :func:`mmcc.clustering.knn_search`, which returns the same lists). Printed
per mode: time of Jaccard (kNN included, and the kNN
alone) and of DBSCAN, peak memory, clusters, noise, stored distances per
row; for the pair, the ratios and the ARI between the two label sets; and
the ARI of the sparse labels against the planted identities.

Peak memory is the resident-set high-water mark (``VmHWM`` of
``/proc/self/status``), reset before each mode by writing ``5`` to
``/proc/self/clear_refs``; it counts everything resident in the process,
the input features included (printed as "base"), and covers faiss's and
torch's native allocations, which tracemalloc would not see.

Features (``--features``): ``reid`` (default) are
:func:`mmcc.testing.embeddings.make_reid_embeddings`, fitted to real
re-ID embeddings' neighbourhood statistics (``--compare-real`` prints both
side by side); ``blobs`` are the earlier, easier Gaussian identities of
:func:`make_features` (the figures of docs/benchmarks.md before the scale
work used them).

For the approximate search (``--knn ivf``): ``--recall-rows R`` measures
recall@k1 of the sparse path's lists against an exact search of R sampled
rows, and ``--exact-labels`` also runs the exact sparse path and prints the
ARI and NMI of the approximate labels against the exact ones, and the
recall over all rows and over the rows the exact labels cluster.

Usage::

    python tools/analysis_tools/benchmark_pseudo_labels.py --sizes 12936
    python tools/analysis_tools/benchmark_pseudo_labels.py \\
        --sizes 32621 100000 --knn-recall
    python tools/analysis_tools/benchmark_pseudo_labels.py --sizes 100000 \\
        --knn ivf --skip-dense --recall-rows 1000 --exact-labels
    python tools/analysis_tools/benchmark_pseudo_labels.py --sizes 1000000 \\
        --knn ivf --skip-dense --recall-rows 1000
    python tools/analysis_tools/benchmark_pseudo_labels.py --sizes 10000 \\
        --skip-dense --compare-real feats.npy ids.npy
"""
import argparse
import os
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from mmcc.clustering import dbscan_labels, jaccard_distance, knn_search
from mmcc.testing.embeddings import make_reid_embeddings, neighbour_statistics
from mmcc.testing.naive_k_reciprocal import naive_jaccard_distance
from mmcc.utils.host import cpu_vector_flags, process_memory, reset_peak_memory


def make_features(n: int,
                  dim: int = 2048,
                  seed: int = 0,
                  outlier_frac: float = 0.08,
                  chunk: int = 8192):
    """Seeded synthetic re-ID-like embeddings.

    Identities have 2 to 60 images (mean about 25), 1 to 4 "cameras" each
    (a camera shifts the identity's centre), and come in groups of
    look-alikes sharing part of their centre; ``outlier_frac`` of the points
    are isolated random directions.

    Returns:
        tuple: (N, dim) float32 L2-normalised features (made chunk by chunk,
        no float64 copy), (N,) int64 identity (-1 for outliers).
    """
    rng = np.random.default_rng(seed)
    n_out = int(round(n * outlier_frac))
    sizes = []
    left = n - n_out
    while left > 0:
        size = int(min(left, max(2, rng.geometric(1 / 25))))
        size = min(size, 60) if left > 60 else size
        sizes.append(size)
        left -= size
    num_ids = len(sizes)
    # look-alike identities share a parent direction; every identity has
    # 1-4 camera centres around its own centre
    parents = rng.standard_normal((max(1, num_ids // 2), dim),
                                  dtype=np.float32)
    parent = rng.integers(0, parents.shape[0], num_ids)
    centers = np.empty((num_ids, 4, dim), np.float32)
    for start in range(0, num_ids, 512):
        stop = min(num_ids, start + 512)
        own = rng.standard_normal((stop - start, dim), dtype=np.float32)
        base = 0.55 * parents[parent[start:stop]] + own
        shift = rng.standard_normal((stop - start, 4, dim), dtype=np.float32)
        centers[start:stop] = base[:, None] + 0.45 * shift
    centers /= np.linalg.norm(centers, axis=2, keepdims=True)
    spread = rng.uniform(0.55, 0.95, num_ids).astype(np.float32)
    num_cams = rng.integers(1, 5, num_ids)

    labels = np.concatenate(
        [np.repeat(np.arange(num_ids), sizes),
         np.full(n_out, -1)])
    labels = labels[rng.permutation(n)].astype(np.int64)
    cam = (rng.random(n) * num_cams[np.maximum(labels, 0)]).astype(np.int64)
    feats = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        lab = labels[start:stop]
        inlier = lab >= 0
        noise[inlier] *= (spread[lab[inlier]] / np.sqrt(dim))[:, None]
        noise[inlier] += centers[lab[inlier], cam[start:stop][inlier]]
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        feats[start:stop] = noise
    return feats, labels


def _available_bytes() -> int:
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemAvailable:'):
                return int(line.split()[1]) * 1024
    return 0


def dense_estimate(n: int) -> int:
    """Bytes the dense baseline holds at its peak: V and Vq (then Vq and the
    result) as N x N float32, plus the N x N bool mask of the final clip."""
    return 2 * 4 * n * n + n * n


def run_mode(features, mode, knn, args):
    gib = 2.0**30
    reset_peak_memory()
    base = process_memory('VmRSS')
    load = os.getloadavg()[0]
    cpu = time.process_time()
    start = time.perf_counter()
    info = {}
    options = dict(info=info) if knn == 'ivf' else {}
    rank, _ = knn_search(
        features, min(args.k1, len(features)), method=knn, **options)
    t_knn = time.perf_counter() - start
    if mode == 'sparse':
        # only the pairs DBSCAN reads, as cluster_features stores them
        dist = jaccard_distance(
            features, args.k1, args.k2, rank=rank, max_distance=args.eps)
    else:
        dist = naive_jaccard_distance(features, args.k1, args.k2, rank=rank)
    t_jac = time.perf_counter() - start
    start = time.perf_counter()
    labels = dbscan_labels(dist, eps=args.eps, min_samples=args.min_samples)
    t_db = time.perf_counter() - start
    cpu = time.process_time() - cpu
    stored = dist.nnz if mode == 'sparse' else dist.size
    del dist
    peak = process_memory('VmHWM')
    res = dict(
        mode=mode,
        t_knn=t_knn,
        t_jac=t_jac,
        t_db=t_db,
        peak=peak / gib,
        base=base / gib,
        clusters=int(labels.max()) + 1,
        noise=int((labels < 0).sum()),
        stored=stored,
        labels=labels,
        rank=rank)
    print(
        f'  {mode:6s}  kNN {knn}: jaccard+kNN {t_jac:6.1f} s '
        f'(kNN {t_knn:5.1f} s)  '
        f'dbscan {t_db:5.1f} s  '
        f'peak RSS {res["peak"]:6.2f} GiB (base {res["base"]:.2f})  '
        f'clusters {res["clusters"]:5d}  noise {res["noise"]:6d}  '
        f'stored d_J {stored / len(labels):.0f}/row; '
        f'process CPU {cpu:.0f} s, load average {load:.1f} at start',
        flush=True)
    if info:
        stages = ', '.join(f'{key[5:]} {value:.1f} s'
                           for key, value in info.items()
                           if key.startswith('time_'))
        recall = info.get('calibration_recall')
        print(
            f'          ivf: PCA {info["pca_dim"]}, nlist '
            f'{info["nlist"]}, nprobe {info["nprobe"]}' +
            ('' if recall is None else f' (calibration recall {recall:.4f})') +
            f'; {stages}')
    return res


def sampled_recall(features, rank, k, num_rows, seed=0):
    """Recall@k of ``rank`` against an exact search of sampled rows."""
    import faiss
    rng = np.random.default_rng(seed + 1)
    rows = np.sort(rng.choice(len(features), num_rows, replace=False))
    start = time.perf_counter()
    _, exact = faiss.knn(
        np.ascontiguousarray(features[rows]),
        features,
        k,
        metric=faiss.METRIC_INNER_PRODUCT)
    hits = sum(
        np.intersect1d(a, b).size for a, b in zip(rank[rows, :k], exact))
    print(
        f'  recall@{k} of the sparse path\'s lists on {num_rows} sampled '
        f'rows against exact search: {hits / exact.size:.4f} (exact '
        f'search of the sample {time.perf_counter() - start:.1f} s)',
        flush=True)


def compare_real(path_feats, path_ids, n, dim, seed):
    """Neighbour statistics of real embeddings and of make_reid_embeddings
    at the same N, side by side."""
    real = np.load(path_feats).astype(np.float32)
    ids = np.load(path_ids)
    sel = np.sort(
        np.random.default_rng(0).choice(
            len(real), min(n, len(real)), replace=False))
    real_stats = neighbour_statistics(real[sel], ids[sel])
    feats, labels = make_reid_embeddings(len(sel), dim, seed)
    syn_stats = neighbour_statistics(feats, labels)
    print(f'neighbour statistics at N={len(sel)} (k=30): real '
          f'{path_feats} (D={real.shape[1]}) vs synthetic (D={dim})')
    for key in real_stats:
        print(f'  {key:20s} {real_stats[key]:8.3f} {syn_stats[key]:8.3f}')


def knn_recall(features, k, methods=('hnsw', 'ivf')):
    start = time.perf_counter()
    exact, _ = knn_search(features, k)
    print(f'  exact kNN k={k}: {time.perf_counter() - start:.1f} s')
    for method in methods:
        start = time.perf_counter()
        approx, _ = knn_search(features, k, method=method)
        took = time.perf_counter() - start
        hits = sum(
            np.intersect1d(a, b, assume_unique=True).size
            for a, b in zip(exact, approx))
        print(f'  {method} kNN: {took:.1f} s, recall@{k} '
              f'{hits / exact.size:.4f}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[12936])
    parser.add_argument('--dim', type=int, default=2048)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--k1', type=int, default=30)
    parser.add_argument('--k2', type=int, default=6)
    parser.add_argument('--eps', type=float, default=0.6)
    parser.add_argument('--min-samples', type=int, default=4)
    methods = ['auto', 'exact', 'screened', 'hnsw', 'ivf']
    parser.add_argument(
        '--knn',
        default='auto',
        choices=methods,
        help='kNN method of the sparse path')
    parser.add_argument(
        '--dense-knn',
        default='exact',
        choices=methods,
        help='kNN method of the dense naive baseline')
    parser.add_argument('--skip-dense', action='store_true')
    parser.add_argument(
        '--knn-recall',
        action='store_true',
        help='also measure hnsw/ivf recall against exact')
    parser.add_argument(
        '--features',
        default='reid',
        choices=['reid', 'blobs'],
        help='synthetic embeddings: realistic (default) or the easy blobs')
    parser.add_argument(
        '--recall-rows',
        type=int,
        default=0,
        help='measure recall@k1 of the sparse lists on this many rows')
    parser.add_argument(
        '--exact-labels',
        action='store_true',
        help='also run the exact sparse path; ARI/NMI against it')
    parser.add_argument(
        '--compare-real',
        nargs=2,
        metavar=('FEATS', 'IDS'),
        help='print neighbour statistics of real (N, D) embeddings (.npy) '
        'with their identities (.npy) beside synthetic ones, then exit')
    args = parser.parse_args()
    if args.compare_real:
        compare_real(*args.compare_real, args.sizes[0], args.dim, args.seed)
        return

    print(f'CPU {cpu_vector_flags()}; cpus {os.cpu_count()}, load average '
          f'{os.getloadavg()[0]:.2f} at start; memory = RSS high-water mark '
          '(VmHWM, reset per mode via /proc/self/clear_refs)')
    for n in args.sizes:
        make = make_reid_embeddings if args.features == 'reid' else \
            make_features
        start = time.perf_counter()
        feats, truth = make(n, args.dim, args.seed)
        print(f'generated in {time.perf_counter() - start:.0f} s')
        print(
            f'N={n} D={args.dim}: {truth.max() + 1} planted identities, '
            f'{(truth < 0).sum()} outliers',
            flush=True)
        if args.knn_recall:
            knn_recall(feats, args.k1)
        sparse = run_mode(feats, 'sparse', args.knn, args)
        if args.recall_rows:
            sampled_recall(feats, sparse['rank'], args.k1,
                           min(args.recall_rows, n), args.seed)
        if args.exact_labels:
            exact = run_mode(feats, 'sparse', 'auto', args)
            print(
                f'  {args.knn} labels vs exact labels: ARI '
                f'{adjusted_rand_score(exact["labels"], sparse["labels"]):.4f}'
                ', NMI '
                f'{normalized_mutual_info_score(exact["labels"], sparse["labels"]):.4f}',  # noqa: E501
                flush=True)
            # recall over every row, and over the rows the exact labels
            # cluster: the random sample is mostly rows left as noise
            hits = np.array([
                np.intersect1d(a, b).size
                for a, b in zip(sparse['rank'], exact['rank'])
            ]) / exact['rank'].shape[1]
            clustered = exact['labels'] >= 0
            print(
                f'  recall@{args.k1} against the exact lists: all rows '
                f'{hits.mean():.4f}, the {clustered.sum()} rows the exact '
                f'labels cluster {hits[clustered].mean():.4f}',
                flush=True)
            del exact
        need = dense_estimate(n)
        avail = _available_bytes()
        dense = None
        if args.skip_dense:
            print('  dense   skipped (--skip-dense)')
        elif need > 0.8 * avail:
            print(f'  dense   skipped: needs at least {need / 2**30:.1f} '
                  'GiB (two N x N float32 and one N x N bool), '
                  f'{avail / 2**30:.1f} GiB available')
        else:
            print(
                f'  dense   needs at least {need / 2**30:.1f} GiB of N x N '
                f'arrays ({avail / 2**30:.1f} GiB available)',
                flush=True)
            dense = run_mode(feats, 'dense', args.dense_knn, args)
        truth_ari = adjusted_rand_score(truth, sparse['labels'])
        print(f'  sparse labels vs planted identities: ARI {truth_ari:.3f}')
        if dense is not None:
            print_ratios(dense, sparse)


def print_ratios(dense, sparse):
    """One line comparing the two modes (dense over sparse)."""

    def ratio(a, b):
        return a / max(b, 1e-9)

    jac = ratio(dense['t_jac'], sparse['t_jac'])
    no_knn = ratio(dense['t_jac'] - dense['t_knn'],
                   sparse['t_jac'] - sparse['t_knn'])
    total = ratio(dense['t_jac'] + dense['t_db'],
                  sparse['t_jac'] + sparse['t_db'])
    mem = ratio(dense['peak'], sparse['peak'])
    mem_above = ratio(dense['peak'] - dense['base'],
                      sparse['peak'] - sparse['base'])
    ari = adjusted_rand_score(dense['labels'], sparse['labels'])
    same = np.array_equal(dense['labels'], sparse['labels'])
    # The two kNN searches may order equal (to the last bit) similarities
    # differently; count the rows whose lists differ as sets.
    rows_differ = sum(not np.array_equal(np.sort(a), np.sort(b))
                      for a, b in zip(dense['rank'], sparse['rank']))
    print(f'  kNN lists: {rows_differ} of {len(dense["rank"])} rows differ '
          'as sets between the two searches')
    print(
        f'  dense/sparse: time jaccard+kNN {jac:.1f}x (without kNN '
        f'{no_knn:.1f}x), total {total:.1f}x; peak memory {mem:.1f}x '
        f'(above base {mem_above:.1f}x); ARI(dense, sparse) {ari:.4f}; '
        f'identical labels {same}',
        flush=True)


if __name__ == '__main__':
    main()
