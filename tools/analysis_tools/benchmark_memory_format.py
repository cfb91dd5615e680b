"""Images per second of the embedding and training passes, by memory format.

Runs mmpretrain's MobileNetV2 (or ``--backbone resnet50``) on random images
in eval mode (the clustering and test passes: no gradient) and in train mode
(forward, backward and an optimiser step), each in the variants below, and
prints images per second and the ratio to the default (NCHW-contiguous)
layout. The header names the CPU's vector extensions, which decide the
convolutions' speed.

- embed: default layout; channels-last; channels-last with each BatchNorm
  folded into its conv (``ReIDModel``'s default: ``channels_last=True,
  fold_batch_norm=True``).
- train: default layout; channels-last with torch's BatchNorm;
  channels-last with :class:`PreciseBatchNorm2d` (``ReIDModel``'s default).

    python tools/analysis_tools/benchmark_memory_format.py
    python tools/analysis_tools/benchmark_memory_format.py --size 128 64 \\
        --batch-size 64
"""
import argparse
import os
import time

import torch

from mmcc.models.utils import convert_precise_batch_norm, fold_batch_norm_copy
from mmcc.utils.host import cpu_vector_flags

EMBED_VARIANTS = ('default layout', 'channels-last',
                  'channels-last + folded BN')
TRAIN_VARIANTS = ('default layout', 'channels-last, torch BN',
                  'channels-last + PreciseBatchNorm2d')


def images_per_second(backbone: str, variant: str, train: bool, size,
                      batch_size: int, steps: int) -> float:
    from mmpretrain.models import MobileNetV2, ResNet
    torch.manual_seed(0)
    model = MobileNetV2(out_indices=(7, )) if backbone == 'mobilenetv2' \
        else ResNet(depth=50, strides=(1, 2, 2, 1))
    images = torch.randn(batch_size, 3, *size)
    if variant != 'default layout':
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if 'PreciseBatchNorm2d' in variant:
        model = convert_precise_batch_norm(model)
    model.train(train)
    if 'folded' in variant:
        model = fold_batch_norm_copy(model, images[:2])
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-6)

    def step():
        if train:
            optimiser.zero_grad()
            model(images)[-1].mean().backward()
            optimiser.step()
        else:
            with torch.no_grad():
                model(images)

    for _ in range(2):  # warm-up: kernel selection, allocations
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch_size * steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--backbone',
        default='mobilenetv2',
        choices=['mobilenetv2', 'resnet50'])
    parser.add_argument(
        '--size', type=int, nargs=2, default=[256, 128], help='H W')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=5)
    args = parser.parse_args()
    print(
        f'CPU flags: {cpu_vector_flags()}; {torch.get_num_threads()} threads; '
        f'load average {os.getloadavg()[0]:.2f} at start; '
        f'{args.backbone} at {args.size[0]}x{args.size[1]}, batch '
        f'{args.batch_size}')
    for train, variants in ((False, EMBED_VARIANTS), (True, TRAIN_VARIANTS)):
        rates = [
            images_per_second(args.backbone, variant, train, args.size,
                              args.batch_size, args.steps)
            for variant in variants
        ]
        for variant, rate in zip(variants, rates):
            print(
                f'  {"train" if train else "embed"} {variant:36s} '
                f'{rate:7.1f} img/s  x{rate / rates[0]:.2f}',
                flush=True)


if __name__ == '__main__':
    main()
