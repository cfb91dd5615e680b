"""Embed a whole data set into one (N, D) matrix, with bounded extra memory.

Every batch is written straight into a preallocated output by dataset index
(``sample_idx``): there is no list of batches and no concatenated copy.
Under distributed data parallel the ranks stream their embeddings to rank 0
a batch at a time, so a rank other than 0 never holds more than one batch
(``gather_to='main'``); ``gather_to='all'`` then broadcasts the finished
matrix from rank 0 in fixed-size chunks, so every rank holds the matrix and
one chunk.
"""
import math
import sys
import time
from typing import Optional

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_comm_device, get_rank, get_world_size
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.utils import ProgressBar

from mmcc.utils import sample_index

# Bytes a broadcast moves at a time: the extra memory a rank needs to
# receive a matrix, whatever its size.
BROADCAST_CHUNK_BYTES = 32 * 2**20


class _Progress:
    """Embedding progress: a bar on a terminal; elsewhere (a log file, a
    pipe) one logged line per tenth, since a bar's carriage returns pile up
    on one line there."""

    def __init__(self, num_batches: int) -> None:
        self.num_batches, self.done, self.images = num_batches, 0, 0
        self.start = time.perf_counter()
        self.bar = ProgressBar(num_batches) if sys.stdout.isatty() else None
        self.every = max(1, math.ceil(num_batches / 10))

    def update(self, batch_images: int) -> None:
        self.done += 1
        self.images += batch_images
        if self.bar is not None:
            self.bar.update()
        elif self.done % self.every == 0 or self.done == self.num_batches:
            rate = self.images / max(time.perf_counter() - self.start, 1e-9)
            print_log(
                f'embedding: {self.done}/{self.num_batches} batches, '
                f'{rate:.0f} images/s',
                logger='current')

    def close(self) -> None:
        if self.bar is not None:
            self.bar.file.write('\n')


def broadcast_rows(tensor: torch.Tensor,
                   src: int = 0,
                   chunk_bytes: int = BROADCAST_CHUNK_BYTES) -> torch.Tensor:
    """Broadcast ``tensor`` from rank ``src`` in place, a few rows at a time.

    Every rank passes a tensor of the same shape and dtype (the receivers'
    contents are overwritten). Rows go ``chunk_bytes`` at a time; a chunk
    that is not already on the backend's device (a CPU tensor under nccl) is
    staged through it, so the extra memory is one chunk whatever the size
    of the tensor. Does nothing in a single process.

    Returns:
        Tensor: ``tensor`` itself.
    """
    if get_world_size() == 1 or tensor.numel() == 0:
        return tensor
    if not tensor.is_contiguous():
        raise ValueError('broadcast_rows needs a contiguous tensor')
    device = get_comm_device()
    row_bytes = max(1, tensor[0].numel() * tensor.element_size())
    rows = max(1, chunk_bytes // row_bytes)
    receiver = get_rank() != src
    for start in range(0, tensor.size(0), rows):
        part = tensor[start:start + rows]
        if part.device == device:
            torch_dist.broadcast(part, src)
        elif receiver:
            staged = torch.empty_like(part, device=device)
            torch_dist.broadcast(staged, src)
            part.copy_(staged)
        else:
            torch_dist.broadcast(part.to(device), src)
    return tensor


class _RankGatherer:
    """Streams every rank's batches into rank 0's output, one step at a
    time.

    Each step is three collectives over the whole group: an all-gather of a
    small header per rank (rows, D, and a ``sample_idx`` outside [0, N) if
    any), so that every rank sees the same sizes and errors and stops at the
    same step; then gathers to rank 0 of the rows' dataset indices and of
    their embeddings, padded to the step's largest batch. A rank whose
    loader is exhausted takes part with 0 rows until every rank is, so
    uneven shards cannot hang. A rank other than 0 holds one batch (and its
    padded copy) at a time; rank 0 holds the output and one batch per rank.
    """

    def __init__(self, num_samples: int, dtype: torch.dtype) -> None:
        self.num_samples, self.dtype = num_samples, dtype
        self.world, self.rank = get_world_size(), get_rank()
        self.device = get_comm_device()
        self.dim = 0
        self.out: Optional[torch.Tensor] = None
        self.seen: Optional[torch.Tensor] = None
        if self.rank == 0:
            self.seen = torch.zeros(num_samples, dtype=torch.bool)

    def step(self, feats: Optional[torch.Tensor],
             indices: Optional[torch.Tensor]) -> bool:
        """Exchange one batch per rank (None: this rank has no more).

        Returns:
            bool: False once every rank is exhausted (nothing exchanged).
        """
        rows = 0 if feats is None else feats.size(0)
        dim = 0 if feats is None else feats.size(1)
        flagged, bad = 0, 0
        if rows:
            outside = (indices < 0) | (indices >= self.num_samples)
            if bool(outside.any()):
                flagged, bad = 1, int(indices[outside][0])
        header = torch.tensor([rows, dim, flagged, bad],
                              dtype=torch.int64,
                              device=self.device)
        headers = [torch.empty_like(header) for _ in range(self.world)]
        torch_dist.all_gather(headers, header)
        headers = torch.stack(headers).cpu()
        counts = headers[:, 0]
        if int(counts.sum()) == 0:
            return False
        self._check(headers)
        if not self.dim:
            self.dim = int(headers[counts > 0, 1][0])
        most = int(counts.max())

        # this rank's rows, padded to the step's largest batch
        if rows == most and feats.device == self.device \
                and feats.is_contiguous():
            chunk = feats
        else:
            chunk = torch.zeros(
                most, self.dim, dtype=self.dtype, device=self.device)
            if rows:
                chunk[:rows] = feats
        index_chunk = torch.full((most, ),
                                 -1,
                                 dtype=torch.int64,
                                 device=self.device)
        if rows:
            index_chunk[:rows] = indices
        if self.rank == 0:
            chunks = [torch.empty_like(chunk) for _ in range(self.world)]
            index_chunks = [
                torch.empty_like(index_chunk) for _ in range(self.world)
            ]
        else:
            chunks = index_chunks = None
        torch_dist.gather(index_chunk, index_chunks, dst=0)
        torch_dist.gather(chunk, chunks, dst=0)
        if self.rank == 0:
            if self.out is None:
                self.out = torch.empty(
                    self.num_samples, self.dim, dtype=self.dtype)
            for count, part, index in zip(counts.tolist(), chunks,
                                          index_chunks):
                if count:
                    index = index[:count].cpu()
                    # padded duplicates write the same row twice
                    self.out[index] = part[:count].cpu()
                    self.seen[index] = True
        return True

    def _check(self, headers: torch.Tensor) -> None:
        """Raise on every rank alike: every rank sees the same headers."""
        for rank, (_, _, flagged, bad) in enumerate(headers.tolist()):
            if flagged:
                raise ValueError(
                    f'extract_features: rank {rank} got sample_idx {bad}, '
                    f'outside [0, {self.num_samples})')
        dims = set(headers[headers[:, 0] > 0, 1].tolist())
        if self.dim:
            dims.add(self.dim)
        if len(dims) > 1:
            raise RuntimeError('extract_features: the ranks embed to '
                               f'different sizes {sorted(dims)}')


def _missing_error(missing: int, num_samples: int) -> RuntimeError:
    return RuntimeError(f'extract_features: {missing} of {num_samples} '
                        'samples were not embedded; does the sampler '
                        'cover the whole dataset?')


@torch.no_grad()
def extract_features(model,
                     dataloader,
                     num_samples: Optional[int] = None,
                     progress: bool = True,
                     dtype: torch.dtype = torch.float32,
                     gather_to: str = 'all') -> Optional[torch.Tensor]:
    """Embed every sample of a data loader, ordered by dataset index.

    The model runs in eval mode (BN with running statistics) and its
    training mode is restored afterwards. Each batch is written straight
    into the (N, D) output, allocated once D is known from the first batch;
    there is no second full copy.

    Under distributed data parallel each rank embeds its shard (mmengine's
    ``DefaultSampler`` pads every rank to the same length; the duplicates
    write the same row again) and sends it to rank 0 a batch at a time, so
    only rank 0 ever holds N x D rows. With ``gather_to='all'`` (the
    default, as before) rank 0 then broadcasts the matrix in chunks and
    every rank returns it; with ``gather_to='main'`` the other ranks return
    None and never hold more than a batch. Errors (a sample not embedded, a
    ``sample_idx`` outside [0, N)) are raised on every rank alike.

    Args:
        model: A :class:`ReIDModel` (or a wrapper around one) whose
            ``forward(mode='tensor')`` returns (B, D) embeddings.
        dataloader: Yields mmengine data batches whose data samples carry
            ``sample_idx``.
        num_samples (int, optional): N, the dataset's length. Defaults to
            ``len(dataloader.dataset)``.
        progress (bool): Report progress on the main process: a bar on a
            terminal, a logged line per tenth elsewhere.
        dtype (torch.dtype): Of the output: ``torch.float32`` (default) or
            ``torch.float16`` (half the memory and traffic; the model's
            output is rounded to it).
        gather_to (str): ``'all'``: every rank returns the matrix.
            ``'main'``: rank 0 returns it, the other ranks None. The same in
            a single process.

    Returns:
        Tensor | None: (N, D) embeddings of ``dtype`` on the CPU, row i is
        sample i; None on ranks other than 0 with ``gather_to='main'``.
    """
    if gather_to not in ('all', 'main'):
        raise ValueError(f"gather_to must be 'all' or 'main', got "
                         f'{gather_to!r}')
    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f'dtype must be torch.float32 or torch.float16, got '
                         f'{dtype}')
    if is_model_wrapper(model):
        model = model.module
    num_samples = num_samples or len(dataloader.dataset)
    distributed = get_world_size() > 1
    rank = get_rank()
    report = _Progress(len(dataloader)) if (progress and rank == 0) else None
    gatherer = _RankGatherer(num_samples, dtype) if distributed else None
    out = seen = None
    was_training = model.training
    model.eval()
    try:
        batches = iter(dataloader)
        while True:
            data = next(batches, None)
            feats = indices = None
            if data is not None:
                data = model.data_preprocessor(data, False)
                feats = model(data['inputs'], mode='tensor').to(dtype)
                indices = torch.tensor(
                    [sample_index(s) for s in data['data_samples']])
                if report is not None:
                    report.update(len(indices))
            if distributed:
                if not gatherer.step(feats, indices):
                    break
                continue
            if data is None:
                break
            if out is None:
                out = torch.empty(num_samples, feats.size(1), dtype=dtype)
                seen = torch.zeros(num_samples, dtype=torch.bool)
            if len(indices) and (int(indices.min()) < 0
                                 or int(indices.max()) >= num_samples):
                raise ValueError('extract_features: got sample_idx outside '
                                 f'[0, {num_samples})')
            out[indices] = feats.cpu()  # padded duplicates: same row again
            seen[indices] = True
    finally:
        model.train(was_training)
        if report is not None:
            report.close()

    if distributed:
        out, seen, dim = gatherer.out, gatherer.seen, gatherer.dim
        # rank 0 alone knows what is missing: every rank raises alike
        missing = torch.tensor([0 if seen is None else int((~seen).sum())],
                               dtype=torch.int64,
                               device=gatherer.device)
        torch_dist.broadcast(missing, 0)
        missing = int(missing.item())
    else:
        dim = 0 if out is None else out.size(1)
        missing = num_samples if seen is None else int((~seen).sum())
    if missing:
        raise _missing_error(missing, num_samples)
    if out is None and (rank == 0 or gather_to == 'all'):
        # N == 0, or a rank other than 0 about to receive the matrix
        out = torch.empty(num_samples, dim, dtype=dtype)
    if distributed and gather_to == 'all':
        broadcast_rows(out, src=0)
    return out
