"""Peak memory and time of the clustering pass's feature path, old vs new.

Embeds a synthetic data set of N samples on ``--world-size`` gloo processes
on the CPU, with a model that maps a 1-value input to D features by
elementwise maths (so the model is not the cost), through:

- ``old``: the previous ``extract_features``, reimplemented below: every
  batch appended to a list, ``torch.cat``, an all-gather of every rank's
  shard to every rank, another cat and a copy into the (N, D) output;
- ``new``: :func:`mmcc.engine.feature_extraction.extract_features` with
  ``gather_to='main'`` (what ``PseudoLabelHook`` runs): rank 0 holds the
  output, the other ranks send a batch at a time and return None;
- ``new-all``: the same with ``gather_to='all'`` (the default for other
  callers): rank 0 then broadcasts the matrix in chunks.

Each path runs in fresh processes (memory that one path freed cannot hide
the next one's peak). A rank measures its peak resident memory (``VmHWM``
in ``/proc/self/status``, reset by writing 5 to ``/proc/self/clear_refs``
just before the path starts) above its resident memory at that moment, and
the path's wall time between two barriers. The ranks' outputs are compared
by a hash of rank 0's matrix.

The script starts its ranks itself (``torch.multiprocessing``, spawn)::

    python tools/analysis_tools/benchmark_feature_path.py
    python tools/analysis_tools/benchmark_feature_path.py \\
        --num-samples 50000 --paths old new

The old path needs about 5 x N x D x 4 bytes per rank at its peak (about
4 GB for each of 2 ranks at the defaults N=100000, D=2048).
"""
import argparse
import datetime
import gc
import hashlib
import os
import platform
import time

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from mmengine.dataset import DefaultSampler
from mmengine.dist import all_gather, get_world_size
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mmcc.engine.feature_extraction import extract_features
from mmcc.utils import sample_index
from mmcc.utils.host import (cpu_vector_flags, free_port, process_memory,
                             reset_peak_memory)

MB = 2**20


class SyntheticSet(Dataset):
    """N samples; sample i is the single value i / N."""

    def __init__(self, num_samples: int) -> None:
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> dict:
        return dict(
            inputs=torch.tensor([i / self.num_samples]),
            data_samples=dict(sample_idx=i))


def collate(batch: list) -> dict:
    return dict(
        inputs=[b['inputs'] for b in batch],
        data_samples=[b['data_samples'] for b in batch])


class Preprocessor(nn.Module):

    def forward(self, data: dict, training: bool = False) -> dict:
        return dict(
            inputs=torch.stack(data['inputs']),
            data_samples=data['data_samples'])


class CheapModel(nn.Module):
    """(B, 1) -> (B, D): sin(x w + b), elementwise."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(dim, generator=g) * 50)
        self.b = nn.Parameter(torch.randn(dim, generator=g))
        self.data_preprocessor = Preprocessor()

    def forward(self, inputs: torch.Tensor, mode: str = 'tensor'):
        return torch.sin(inputs * self.w + self.b)


@torch.no_grad()
def old_extract_features(model, dataloader, num_samples=None):
    """The previous implementation (progress reporting left out)."""
    num_samples = num_samples or len(dataloader.dataset)
    was_training = model.training
    model.eval()
    feats, indices = [], []
    for data in dataloader:
        data = model.data_preprocessor(data, False)
        feats.append(model(data['inputs'], mode='tensor').float())
        indices.append(
            torch.tensor([sample_index(s) for s in data['data_samples']],
                         device=feats[-1].device))
    model.train(was_training)

    feats, indices = torch.cat(feats), torch.cat(indices)
    if get_world_size() > 1:
        feats = torch.cat(all_gather(feats))
        indices = torch.cat(all_gather(indices))
    out = torch.zeros(num_samples, feats.size(1), dtype=torch.float32)
    seen = torch.zeros(num_samples, dtype=torch.bool)
    indices = indices.cpu()
    out[indices] = feats.cpu()
    seen[indices] = True
    if not bool(seen.all()):
        raise RuntimeError('not every sample was embedded')
    return out


def run_path(path: str, args) -> dict:
    dataset = SyntheticSet(args.num_samples)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=DefaultSampler(dataset, shuffle=False),
        collate_fn=collate)
    model = CheapModel(args.dim)
    dtype = getattr(torch, args.dtype)
    with torch.no_grad():  # warm-up: lazily allocated kernels and pools
        model(torch.zeros(args.batch_size, 1))
    gc.collect()
    torch_dist.barrier()
    reset = reset_peak_memory()
    start_kb = process_memory('VmRSS') / 1024
    begin = time.perf_counter()
    if path == 'old':
        out = old_extract_features(model, loader)
    else:
        out = extract_features(
            model,
            loader,
            progress=False,
            dtype=dtype,
            gather_to='main' if path == 'new' else 'all')
    torch_dist.barrier()
    seconds = time.perf_counter() - begin
    peak_kb = process_memory('VmHWM') / 1024
    digest = None
    if out is not None and torch_dist.get_rank() == 0:
        digest = hashlib.sha1(out.numpy().data).hexdigest()[:12]
    return dict(
        start_mb=start_kb / 1024,
        peak_mb=(peak_kb - start_kb) / 1024,
        seconds=seconds,
        reset=reset,
        held=None if out is None else tuple(out.shape),
        digest=digest)


def worker(rank: int, world_size: int, port: int, path: str, args,
           queue) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{port}',
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(minutes=30))
    try:
        queue.put((rank, run_path(path, args)))
    finally:
        torch_dist.destroy_process_group()


def launch(path: str, args) -> list:
    ctx = mp.get_context('spawn')
    queue = ctx.SimpleQueue()
    port = free_port()
    procs = [
        ctx.Process(
            target=worker,
            args=(rank, args.world_size, port, path, args, queue))
        for rank in range(args.world_size)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    if any(proc.exitcode != 0 for proc in procs):
        raise RuntimeError(f'path {path}: a rank failed')
    results = dict(queue.get() for _ in procs)
    return [results[rank] for rank in range(args.world_size)]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num-samples', type=int, default=100000)
    parser.add_argument('--dim', type=int, default=2048)
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--world-size', type=int, default=2)
    parser.add_argument(
        '--dtype',
        choices=('float32', 'float16'),
        default='float32',
        help="output dtype of the new path (the old one is float32)")
    parser.add_argument(
        '--paths',
        nargs='+',
        choices=('old', 'new', 'new-all'),
        default=['old', 'new', 'new-all'])
    return parser.parse_args()


def main():
    args = parse_args()
    matrix_mb = args.num_samples * args.dim * 4 / MB
    print(f'CPU: {platform.processor() or platform.machine()}, '
          f'{os.cpu_count()} cores; {cpu_vector_flags()}')
    print(f'torch {torch.__version__}; {args.world_size} gloo ranks, '
          f'1 thread each; N={args.num_samples}, D={args.dim}, batch '
          f'{args.batch_size}, new-path dtype {args.dtype}; the float32 '
          f'(N, D) matrix is {matrix_mb:.0f} MB')
    runs = {}
    for path in args.paths:
        runs[path] = launch(path, args)
        for rank, r in enumerate(runs[path]):
            held = 'None' if r['held'] is None else 'x'.join(
                map(str, r['held']))
            note = '' if r['reset'] else ' (VmHWM not reset: since start)'
            print(f'{path:8s} rank {rank}: peak {r["peak_mb"]:8.1f} MB above '
                  f'{r["start_mb"]:6.1f} MB at start, {r["seconds"]:6.2f} s'
                  f', returns {held}' +
                  (f', sha1 {r["digest"]}' if r['digest'] else '') + note)
    if 'old' in runs:
        for path in ('new', 'new-all'):
            if path not in runs:
                continue
            for rank in range(args.world_size):
                old, new = runs['old'][rank], runs[path][rank]
                print(f'{path}/old rank {rank}: peak '
                      f'{new["peak_mb"] / max(old["peak_mb"], 1e-9):.3f}, '
                      f'time {new["seconds"] / max(old["seconds"], 1e-9):.3f}')
    if args.dtype == 'float32' and len(runs) > 1:
        same = {run[0]['digest'] for run in runs.values()}
        print('rank 0 matrices identical across paths: '
              f'{"yes" if len(same) == 1 else "NO"}')


if __name__ == '__main__':
    main()
