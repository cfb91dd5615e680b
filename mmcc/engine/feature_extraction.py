import math
import sys
import time
from typing import Optional

import torch
from mmengine.dist import all_gather, get_world_size, is_main_process
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.utils import ProgressBar

from mmcc.utils import sample_index


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


@torch.no_grad()
def extract_features(model,
                     dataloader,
                     num_samples: Optional[int] = None,
                     progress: bool = True) -> torch.Tensor:
    """Embed every sample of a data loader, ordered by dataset index.

    The model runs in eval mode (BN with running statistics) and its
    training mode is restored afterwards. Under distributed data parallel
    each rank embeds its shard (mmengine's ``DefaultSampler`` pads every rank
    to the same length) and the shards are all-gathered, so every rank
    returns the full matrix.

    Args:
        model: A :class:`ReIDModel` (or a wrapper around one) whose
            ``forward(mode='tensor')`` returns (B, D) embeddings.
        dataloader: Yields mmengine data batches whose data samples carry
            ``sample_idx``.
        num_samples (int, optional): N, the dataset's length. Defaults to
            ``len(dataloader.dataset)``.
        progress (bool): Report progress on the main process: a bar on a
            terminal, a logged line per tenth elsewhere.

    Returns:
        Tensor: (N, D) float32 embeddings on the CPU; row i is sample i.
    """
    if is_model_wrapper(model):
        model = model.module
    num_samples = num_samples or len(dataloader.dataset)
    was_training = model.training
    model.eval()
    feats, indices = [], []
    report = _Progress(len(dataloader)) if (progress
                                            and is_main_process()) else None
    for data in dataloader:
        data = model.data_preprocessor(data, False)
        feats.append(model(data['inputs'], mode='tensor').float())
        indices.append(
            torch.tensor([sample_index(s) for s in data['data_samples']],
                         device=feats[-1].device))
        if report is not None:
            report.update(len(indices[-1]))
    if report is not None:
        report.close()
    model.train(was_training)

    feats, indices = torch.cat(feats), torch.cat(indices)
    if get_world_size() > 1:
        feats = torch.cat(all_gather(feats))
        indices = torch.cat(all_gather(indices))
    out = torch.zeros(num_samples, feats.size(1), dtype=torch.float32)
    seen = torch.zeros(num_samples, dtype=torch.bool)
    indices = indices.cpu()
    out[indices] = feats.cpu()  # padded duplicates write the same row twice
    seen[indices] = True
    if not bool(seen.all()):
        missing = int((~seen).sum())
        raise RuntimeError(f'extract_features: {missing} of {num_samples} '
                           'samples were not embedded; does the sampler '
                           'cover the whole dataset?')
    return out
