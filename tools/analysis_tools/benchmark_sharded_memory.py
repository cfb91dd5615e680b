"""Replicated vs sharded cluster memory: bytes, peak RSS and time per step.

Runs ``ClusterMemoryHead`` with ``sharded=False`` and ``sharded=True`` in
the same processes (gloo, CPU), one after the other, and times the training
step the head owns: the ClusterNCE loss, its backward pass down to the
queries, and the momentum update. Per rank and head it reports:

- ``memory``: bytes of the memory the rank holds (``K D`` replicated,
  ``ceil(K / W) D`` sharded, times the element size);
- ``logits``: bytes of the rank's logits (``B_rank x K`` replicated,
  ``B_total x S_r`` sharded), as computed from the shapes;
- ``peak RSS``: the process's peak resident set (``VmHWM``) over the
  measured steps, reset (``5 > /proc/self/clear_refs``) once the head holds
  its memory and the (K, D) centroids it was reset from are freed, so it
  is the steady-state peak of training steps; ``(+...)`` is that peak above
  the RSS at the reset;
- ``step``: the median wall time of a step over ``--steps`` steps after
  ``--warmup`` steps, the ranks starting each step together;

and the ratios sharded / replicated from the same run. The header names the
CPU's vector extensions (avx2, avx512_bf16, amx), which decide the matmuls'
speed.

It starts itself on ``--nproc`` processes with ``torch.distributed.run``;
the same can be written out::

    python tools/analysis_tools/benchmark_sharded_memory.py
    python tools/analysis_tools/benchmark_sharded_memory.py --clusters 20000
    python -m torch.distributed.run --nproc_per_node 2 \\
        tools/analysis_tools/benchmark_sharded_memory.py --clusters 100000

Memory needed, per rank: the replicated head holds ``K D`` floats and copies
them at every step (the matmul's operand, kept for the backward pass), so
about ``2 K D x 4`` bytes plus the ``K D`` centroids while resetting: with
the defaults (K = 500000, D = 2048) about 8-12 GB per rank, twice that for
the two ranks. Run it on an otherwise idle machine.
"""
import argparse
import gc
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

import torch

from mmcc.utils.host import (cpu_vector_flags, free_port, process_memory,
                             reset_peak_memory)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--clusters',
        type=int,
        nargs='+',
        default=[100000, 500000],
        help='numbers of clusters K to measure')
    parser.add_argument('--dim', type=int, default=2048, help='D')
    parser.add_argument(
        '--batch',
        type=int,
        default=256,
        help='global batch size, split evenly across the processes')
    parser.add_argument(
        '--instances',
        type=int,
        default=8,
        help='queries per cluster in a batch (a P x Z batch)')
    parser.add_argument(
        '--mode',
        choices=['mean', 'hard'],
        default='mean',
        help='momentum update mode')
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument(
        '--nproc', type=int, default=2, help='number of processes (ranks)')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='torch threads per process; defaults to the CPU count divided '
        'by --nproc')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def launch(argv) -> int:
    """Start this script on ``--nproc`` gloo processes."""
    args = parse_args(argv)
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
        str(args.nproc), '--master_port',
        str(free_port()),
        osp.abspath(__file__)
    ] + list(argv)
    return subprocess.call(cmd)


def fix_mmap_threshold() -> bool:
    """Serve every allocation above 128 KiB by its own mmap, returned to
    the system when freed. glibc otherwise raises that threshold after
    each freed large block (up to 32 MiB), and the second head measured
    would then reuse heap pages the first one left resident, hiding its
    own allocations from the peak RSS."""
    try:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        return bool(libc.mallopt(-3, 128 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def measure(head_cfg, num_clusters, args, rank, world_size):
    """One head: build, reset, run the steps; returns this rank's row."""
    import torch.distributed as torch_dist
    from mmengine.registry import DefaultScope

    from mmcc.registry import MODELS
    local_batch = args.batch // world_size
    with DefaultScope.overwrite_default_scope('mmcc'):
        head = MODELS.build(head_cfg)
    g = torch.Generator().manual_seed(args.seed)
    # (K, D) on every rank, as PseudoLabelHook passes them; freed below
    centroids = torch.randn(num_clusters, args.dim, generator=g)
    # sample i has pseudo-label i: a batch is a list of cluster ids
    head.reset(centroids, torch.arange(num_clusters))
    del centroids
    gc.collect()
    torch_dist.barrier()
    cleared = reset_peak_memory()
    rss_before = process_memory('VmRSS')
    g = torch.Generator().manual_seed(args.seed + 1 + rank)
    times = []
    for _ in range(args.warmup + args.steps):
        clusters = torch.randperm(
            num_clusters, generator=g)[:local_batch // args.instances]
        indices = clusters.repeat_interleave(args.instances)
        samples = [dict(sample_idx=int(i)) for i in indices]
        feats = torch.randn(len(samples), args.dim, generator=g)
        feats.requires_grad_()
        torch_dist.barrier()
        start = time.perf_counter()
        losses = head.loss(feats, samples)
        losses['loss'].backward()
        times.append(time.perf_counter() - start)
    peak = process_memory('VmHWM') if cleared else -1
    rows = head.memory.size(0)
    logit_rows = args.batch if head.sharded else local_batch
    row = dict(
        memory=head.memory.numel() * head.memory.element_size(),
        logits=logit_rows * rows * 4,
        peak=peak,
        peak_above=peak - rss_before if cleared else -1,
        step=statistics.median(times[args.warmup:]),
        loss=float(losses['loss'].detach()))
    del head, losses, feats
    gc.collect()
    return row


def fmt_bytes(n: float) -> str:
    if n < 0:
        return 'n/a'
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if abs(n) < 1024 or unit == 'GiB':
            return f'{n:.1f} {unit}' if unit != 'B' else f'{int(n)} B'
        n /= 1024
    return f'{n:.1f} GiB'


def worker(args) -> None:
    import torch.distributed as torch_dist

    import mmcc.models  # noqa: F401  (registers the head)
    fixed_threshold = fix_mmap_threshold()
    torch_dist.init_process_group('gloo')
    rank, world_size = torch_dist.get_rank(), torch_dist.get_world_size()
    threads = args.threads or max(1, (os.cpu_count() or 1) // world_size)
    torch.set_num_threads(threads)
    if rank == 0:
        print(f'CPU: {cpu_vector_flags()}')
        print(f'torch {torch.__version__} (CPU capability '
              f'{torch.backends.cpu.get_cpu_capability()}), {world_size} '
              f'gloo processes x {threads} threads, D={args.dim}, global '
              f'batch {args.batch} ({args.batch // world_size} per rank, '
              f'{args.instances} per cluster), update {args.mode!r}, '
              f'median of {args.steps} steps after {args.warmup}')
        if not fixed_threshold:
            print('(could not fix the mmap threshold: the peak RSS of the '
                  'second head measured may be understated)')
        if world_size == 1:
            print('one process: the sharded head runs the replicated code')
        sys.stdout.flush()
    for num_clusters in args.clusters:
        results = {}
        for name, sharded in (('replicated', False), ('sharded', True)):
            cfg = dict(
                type='ClusterMemoryHead',
                feat_dim=args.dim,
                update_mode=args.mode,
                sharded=sharded)
            row = measure(cfg, num_clusters, args, rank, world_size)
            rows = [None] * world_size
            torch_dist.all_gather_object(rows, row)
            results[name] = rows
        if rank == 0:
            report(num_clusters, results)
    torch_dist.barrier()
    torch_dist.destroy_process_group()


def report(num_clusters, results) -> None:
    print(f'\nK = {num_clusters}')
    print(f'{"head":<11}{"rank":>5}{"memory":>12}{"logits":>12}'
          f'{"peak RSS":>12}{"(+ steps)":>12}{"step":>10}')
    for name, rows in results.items():
        for rank, row in enumerate(rows):
            print(f'{name:<11}{rank:>5}{fmt_bytes(row["memory"]):>12}'
                  f'{fmt_bytes(row["logits"]):>12}'
                  f'{fmt_bytes(row["peak"]):>12}'
                  f'{fmt_bytes(row["peak_above"]):>12}'
                  f'{row["step"] * 1e3:>8.1f}ms')
    print('sharded / replicated, per rank:')
    for rank, (rep, sh) in enumerate(
            zip(results['replicated'], results['sharded'])):
        ratios = []
        for key, label in (('memory', 'memory'), ('logits', 'logits'),
                           ('peak', 'peak RSS'), ('peak_above', '(+ steps)'),
                           ('step', 'step time')):
            ok = rep[key] > 0 and sh[key] >= 0
            ratios.append(
                f'{label} {sh[key] / rep[key]:.3f}' if ok else f'{label} n/a')
        print(f'  rank {rank}: ' + ', '.join(ratios))
    for name, rows in results.items():
        print(f'  last loss per rank, {name}: ' +
              ', '.join(f'{row["loss"]:.5f}' for row in rows))
    sys.stdout.flush()


def main() -> None:
    if 'LOCAL_RANK' not in os.environ:
        sys.exit(launch(sys.argv[1:]))
    worker(parse_args())


if __name__ == '__main__':
    main()
