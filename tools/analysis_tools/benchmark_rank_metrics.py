"""Benchmark ``rank_metrics`` against a per-query loop on a Market-sized case.

The baseline is how re-ID code bases usually evaluate: for each query, sort
its gallery row, drop the ignored entries and call scikit-learn's
``average_precision_score`` (CMC and mINP read off the same sorted row). Both
run on the same seeded data, in the same process; the script prints both
times, the speed ratio and the largest absolute difference of every metric.

Example::

    python tools/analysis_tools/benchmark_rank_metrics.py
    python tools/analysis_tools/benchmark_rank_metrics.py --num-query 500
"""
import argparse
import time

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from mmcc.evaluation.functional import rank_metrics

TOPK = (1, 5, 10)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num-query', type=int, default=3368)
    parser.add_argument('--num-gallery', type=int, default=15913)
    parser.add_argument('--num-ids', type=int, default=751)
    parser.add_argument('--num-cams', type=int, default=6)
    parser.add_argument(
        '--num-junk', type=int, default=600, help='gallery identity -1')
    parser.add_argument(
        '--num-distractors', type=int, default=2000, help='gallery identity 0')
    parser.add_argument('--dim', type=int, default=64)
    parser.add_argument(
        '--noise', type=float, default=1.3, help='feature noise per axis')
    parser.add_argument(
        '--decimals',
        type=int,
        default=4,
        help='distances are rounded to this many decimals, making ties')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument(
        '--threads',
        type=int,
        default=1,
        help='torch threads for rank_metrics (the baseline is '
        'single-threaded)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    if args.num_gallery <= args.num_junk + args.num_distractors:
        parser.error('--num-gallery must exceed --num-junk + '
                     '--num-distractors')
    return args


def make_case(args):
    """Random unit features clustered by identity, and their distances.

    Returns:
        tuple: (Q, G) float32 distances, then query ids, gallery ids, query
        cameras and gallery cameras.
    """
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.num_ids + 1, args.dim))
    query_ids = rng.integers(1, args.num_ids + 1, args.num_query)
    gallery_ids = rng.integers(1, args.num_ids + 1, args.num_gallery)
    # Junk entries are bad crops of real people: near a real identity, so
    # counting them would change the result. Distractors (identity 0) share
    # a centre of their own.
    num_special = args.num_junk + args.num_distractors
    looks_like = gallery_ids.copy()
    looks_like[args.num_junk:num_special] = 0
    gallery_ids[:args.num_junk] = -1
    gallery_ids[args.num_junk:num_special] = 0

    def features(ids):
        x = centres[ids] + args.noise * rng.standard_normal(
            (len(ids), args.dim))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    query, gallery = features(query_ids), features(looks_like)
    # Exact duplicates in the gallery: ties whatever the rounding.
    duplicates = rng.choice(args.num_gallery, args.num_gallery // 20, False)
    gallery[duplicates] = gallery[np.roll(duplicates, 1)]
    gallery_ids[duplicates] = gallery_ids[np.roll(duplicates, 1)]
    dist = np.round(2 - 2 * query @ gallery.T, args.decimals)
    return (dist.astype(np.float32), query_ids, gallery_ids,
            rng.integers(0, args.num_cams, args.num_query),
            rng.integers(0, args.num_cams, args.num_gallery))


def per_query_loop(distmat, query_ids, gallery_ids, query_cams, gallery_cams):
    """The baseline: sort each row, then scikit-learn's AP on it."""
    aps, inps, hits = [], [], np.zeros(len(TOPK))
    for i in range(len(distmat)):
        order = np.argsort(distmat[i], kind='stable')
        ids, cams, dist = gallery_ids[order], gallery_cams[order], \
            distmat[i, order]
        valid = (ids != -1) & ~((ids == query_ids[i]) &
                                (cams == query_cams[i]))
        positive, dist = ids[valid] == query_ids[i], dist[valid]
        if not positive.any():
            continue
        aps.append(average_precision_score(positive, -dist))
        # Rank of a positive: valid entries at a distance <= its own.
        ranks = np.searchsorted(dist, dist[positive], side='right')
        inps.append(positive.sum() / ranks.max())
        hits += ranks.min() <= np.asarray(TOPK)
    results = dict(mAP=np.mean(aps), mINP=np.mean(inps))
    results.update({f'top{k}': h / len(aps) for k, h in zip(TOPK, hits)})
    return results


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    case = make_case(args)
    distmat = case[0]
    print(f'{distmat.shape[0]} queries x {distmat.shape[1]} gallery, '
          f'{args.num_ids} identities, {args.num_cams} cameras, '
          f'{args.num_junk} junk, {args.num_distractors} distractors')

    start = time.perf_counter()
    expected = per_query_loop(*case)
    loop_time = time.perf_counter() - start

    fast_times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        results = rank_metrics(*case, topk=TOPK)
        fast_times.append(time.perf_counter() - start)
    fast_time = min(fast_times)

    print(f'per-query loop (argsort + sklearn): {loop_time:.3f} s')
    print(f'rank_metrics (best of {args.repeat}):      {fast_time:.3f} s')
    print(f'speed-up: {loop_time / fast_time:.1f}x')
    diffs = {key: abs(value - expected[key]) for key, value in results.items()}
    for key, value in results.items():
        print(f'{key:>5}: {value:.6f}  abs diff vs loop {diffs[key]:.2e}')
    print(f'speed-up >= 20x: {loop_time / fast_time >= 20}; '
          f'every diff <= 1e-9: {max(diffs.values()) <= 1e-9}')


if __name__ == '__main__':
    main()
