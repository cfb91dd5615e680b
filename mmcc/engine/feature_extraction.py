from typing import Optional

import torch
from mmengine.dist import all_gather, get_world_size, is_main_process
from mmengine.model import is_model_wrapper
from mmengine.utils import ProgressBar

from mmcc.utils import sample_index


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
        progress (bool): Show a progress bar on the main process.

    Returns:
        Tensor: (N, D) float32 embeddings on the CPU; row i is sample i.
    """
    if is_model_wrapper(model):
        model = model.module
    num_samples = num_samples or len(dataloader.dataset)
    was_training = model.training
    model.eval()
    feats, indices = [], []
    bar = ProgressBar(len(dataloader)) if (progress
                                           and is_main_process()) else None
    for data in dataloader:
        data = model.data_preprocessor(data, False)
        feats.append(model(data['inputs'], mode='tensor').float())
        indices.append(
            torch.tensor([sample_index(s) for s in data['data_samples']],
                         device=feats[-1].device))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.file.write('\n')
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
