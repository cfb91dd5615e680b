"""Vectorised momentum update vs the reference's per-sample loops.

Times :func:`mmcc.models.functional.momentum_update` (mean and hard modes)
against straightforward Python loops written below (the reference's
structure), on a training-sized batch, and reports the speed ratio, the
largest difference between the resulting memories, and how many torch ops
each dispatches (counted with ``torch.profiler``; on a GPU each is at least
one kernel launch, which is what dominates there).

Example::

    python tools/analysis_tools/benchmark_momentum_update.py
    python tools/analysis_tools/benchmark_momentum_update.py --device cuda
"""
import argparse
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from mmcc.models.functional import momentum_update


def loop_mean(memory, queries, labels, m):
    """Reference rule: one sample at a time, in batch order."""
    for query, label in zip(queries, labels.tolist()):
        if label < 0:
            continue
        memory[label] = m * memory[label] + (1 - m) * query
        memory[label] /= memory[label].norm()
    return memory


def loop_hard(memory, queries, labels, m):
    """Reference hard rule: per cluster, one similarity per member, then
    the update with the least similar member."""
    members = {}
    for b, label in enumerate(labels.tolist()):
        if label >= 0:
            members.setdefault(label, []).append(b)
    for label, batch_indices in members.items():
        sims = [float(queries[b] @ memory[label]) for b in batch_indices]
        hardest = batch_indices[min(range(len(sims)), key=sims.__getitem__)]
        memory[label] = m * memory[label] + (1 - m) * queries[hardest]
        memory[label] /= memory[label].norm()
    return memory


def vectorised(mode):

    def update(memory, queries, labels, m):
        return momentum_update(memory, queries, labels, m, mode)

    return update


def make_batch(args, device):
    g = torch.Generator().manual_seed(args.seed)
    memory = F.normalize(
        torch.randn(args.num_clusters, args.dim, generator=g), dim=1)
    queries = F.normalize(
        torch.randn(args.batch_size, args.dim, generator=g), dim=1)
    # `clusters_in_batch` clusters with uneven counts (1 .. ~3x the mean),
    # shuffled into random batch order.
    present = torch.randperm(args.num_clusters, generator=g)
    present = present[:args.clusters_in_batch]
    weights = 0.5 + torch.rand(args.clusters_in_batch, generator=g) * 2.5
    counts = torch.ones(args.clusters_in_batch, dtype=torch.long)
    rest = args.batch_size - args.clusters_in_batch
    counts += torch.multinomial(
        weights, rest, replacement=True,
        generator=g).bincount(minlength=args.clusters_in_batch)
    labels = present.repeat_interleave(counts)
    labels = labels[torch.randperm(args.batch_size, generator=g)]
    return (memory.to(device), queries.to(device), labels.to(device), counts)


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_ms(fns, memory, queries, labels, m, repeats, device):
    """Best-of-``repeats`` wall time of each fn, in ms, on fresh copies of
    the memory. The fns are interleaved so that load from other processes
    hits them alike; the minimum is the least noisy estimate of the cost
    (as ``timeit`` advises)."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times):
            fresh = memory.clone()
            sync(device)
            start = time.perf_counter()
            fn(fresh, queries, labels, m)
            sync(device)
            fn_times.append((time.perf_counter() - start) * 1e3)
    return [min(fn_times) for fn_times in times]


def count_ops(fn, memory, queries, labels, m):
    """(top-level aten ops, all aten ops incl. nested) dispatched by fn."""
    fresh = memory.clone()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(fresh, queries, labels, m)
    events = [e for e in prof.events() if e.name.startswith('aten::')]
    top = [
        e for e in events
        if e.cpu_parent is None or not e.cpu_parent.name.startswith('aten::')
    ]
    return len(top), len(events)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--num-clusters', type=int, default=1000)
    parser.add_argument('--dim', type=int, default=2048)
    parser.add_argument('--clusters-in-batch', type=int, default=60)
    parser.add_argument('--momentum', type=float, default=0.1)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument(
        '--threads',
        type=int,
        default=1,
        help='intra-op CPU threads. 1 by default: on a busy machine a '
        'multi-threaded op stalls until all its threads get a core, which '
        'penalises only the vectorised side (the loop\'s ops are too small '
        'to be split)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    memory, queries, labels, counts = make_batch(args, device)
    m = args.momentum
    print(f'device={device} threads={torch.get_num_threads()} '
          f'B={args.batch_size} K={args.num_clusters} D={args.dim} '
          f'clusters in batch={args.clusters_in_batch} '
          f'(samples per cluster: min {int(counts.min())}, '
          f'mean {args.batch_size / args.clusters_in_batch:.1f}, '
          f'max {int(counts.max())}) m={m}, best of {args.repeats}')

    # Floor: one elementwise pass over the batch's queries.
    floor, = time_ms([lambda mem, q, y, m: q.mul(1.0)], memory, queries,
                     labels, m, args.repeats, device)
    print(f'one pass over the batch (queries * 1): {floor:.2f} ms')

    for mode, loop in (('mean', loop_mean), ('hard', loop_hard)):
        fast = vectorised(mode)
        for fn in (loop, fast):  # warm-up
            fn(memory.clone(), queries, labels, m)
        expected = loop(memory.clone(), queries, labels, m)
        got = fast(memory.clone(), queries, labels, m)
        max_diff = (expected - got).abs().max().item()
        t_loop, t_fast = time_ms([loop, fast], memory, queries, labels, m,
                                 args.repeats, device)
        ops_loop = count_ops(loop, memory, queries, labels, m)
        ops_fast = count_ops(fast, memory, queries, labels, m)
        print(f'[{mode}] per-sample loop {t_loop:8.2f} ms | vectorised '
              f'{t_fast:7.2f} ms | ratio {t_loop / t_fast:5.1f}x | max '
              f'|diff| {max_diff:.2e}')
        print(f'[{mode}] aten ops (top-level / incl. nested): loop '
              f'{ops_loop[0]} / {ops_loop[1]}, vectorised {ops_fast[0]} / '
              f'{ops_fast[1]}')


if __name__ == '__main__':
    main()
