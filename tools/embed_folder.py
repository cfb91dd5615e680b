"""Embed every image of a folder with a trained re-ID model.

    python tools/embed_folder.py CONFIG CHECKPOINT FOLDER --out feats.npy \\
        [--query IMG --topk K] [--batch-size B] [--device D]

Finds the .jpg/.jpeg/.png/.bmp files under FOLDER (recursively, sorted
paths), embeds them with :func:`mmcc.apis.embed_images` (the config's test
pipeline, as ``tools/test.py`` embeds), writes the (N, D) float32 array of
unit embeddings to ``--out`` and the image paths, one a line in the same
order, to the ``.txt`` file beside it (``feats.txt``). With ``--query IMG``
it prints the K files nearest to IMG by cosine distance (1 - cosine
similarity).
"""
import argparse
import os
import os.path as osp
import sys
from typing import List

import numpy as np
from mmengine.config import DictAction
from mmengine.utils import ProgressBar

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Embed the images of a folder with a re-ID model')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('folder', help='folder of images (recursive)')
    parser.add_argument(
        '--out',
        required=True,
        help='(N, D) embeddings as .npy; the paths go to the .txt beside it')
    parser.add_argument(
        '--query', help='print the files nearest to this image')
    parser.add_argument(
        '--topk', type=int, default=10, help='how many (default 10)')
    parser.add_argument(
        '--batch-size', type=int, default=32, help='default 32')
    parser.add_argument(
        '--device', help='e.g. cpu, cuda:0 (default: cuda if available)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings')
    return parser.parse_args(argv)


def list_images(folder: str) -> List[str]:
    """Image files under ``folder``, recursively, in sorted order."""
    paths = []
    for root, _, files in os.walk(folder):
        paths.extend(
            osp.join(root, name) for name in files
            if name.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(paths)


def list_path(out: str) -> str:
    """``feats.npy`` -> ``feats.txt``."""
    return osp.splitext(out)[0] + '.txt'


def embed_all(model, paths, batch_size, progress=True) -> np.ndarray:
    from mmcc.apis import embed_images
    chunk = batch_size * 8
    bar = ProgressBar(len(paths)) if progress else None
    feats = []
    for start in range(0, len(paths), chunk):
        part = paths[start:start + chunk]
        feats.append(embed_images(model, part, batch_size=batch_size))
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.file.write('\n')
    return np.concatenate(feats)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not osp.isdir(args.folder):
        print(f'{args.folder} is not a folder', file=sys.stderr)
        return 2
    paths = list_images(args.folder)
    if not paths:
        print(
            f'no {"/".join(IMAGE_EXTENSIONS)} images under {args.folder}',
            file=sys.stderr)
        return 2
    if args.query is not None and not osp.isfile(args.query):
        print(f'query image {args.query} not found', file=sys.stderr)
        return 2

    from mmcc.apis import embed_images, init_model
    model = init_model(
        args.config,
        args.checkpoint,
        device=args.device,
        cfg_options=args.cfg_options)
    feats = embed_all(model, paths, args.batch_size)

    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.out, 'wb') as f:  # exactly this name, even without .npy
        np.save(f, feats)
    with open(list_path(args.out), 'w') as f:
        f.writelines(path + '\n' for path in paths)
    print(f'{len(paths)} embeddings of dimension {feats.shape[1]} -> '
          f'{args.out}, paths -> {list_path(args.out)}')

    if args.query is not None:
        query = embed_images(model, [args.query])[0]
        # 1 - cosine similarity of unit vectors, in [0, 2]
        dist = np.clip(1.0 - feats @ query, 0.0, 2.0)
        order = np.argsort(dist, kind='stable')[:max(args.topk, 0)]
        print(f'nearest to {args.query} (cosine distance):')
        for rank, i in enumerate(order, 1):
            print(f'{rank:4d}  {dist[i]:.6f}  {paths[i]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
