"""Write the synthetic Market-1501-layout re-ID data set.

Usage::

    python tools/dataset_converters/generate_synthetic_reid.py \
        data/synthetic_reid [--num-train-ids 200] [--seed 0]

Does nothing when the directory already holds the same tree (same
parameters, complete); see ``mmcc.testing.synthetic``.
"""
import argparse
import time

from mmcc.testing.synthetic import generate_synthetic_reid


def parse_args():
    parser = argparse.ArgumentParser(
        description='Generate the synthetic re-ID data set (Market-1501 '
        'layout).')
    parser.add_argument('out_dir', help='root of the tree to write')
    parser.add_argument('--num-train-ids', type=int, default=200)
    parser.add_argument('--num-test-ids', type=int, default=200)
    parser.add_argument('--images-per-id', type=int, default=16)
    parser.add_argument('--num-cams', type=int, default=6)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--size',
        type=int,
        nargs=2,
        default=(64, 128),
        metavar=('W', 'H'),
        help='crop width and height')
    parser.add_argument(
        '--num-distractors',
        type=int,
        default=None,
        help='identity-0 gallery images (default: 5%% of the test images)')
    parser.add_argument(
        '--num-junk',
        type=int,
        default=None,
        help='identity -1 gallery images (default: 1%% of the test images)')
    parser.add_argument(
        '--workers',
        type=int,
        default=None,
        help='processes that render (0: this one; default: one per CPU '
        'for trees of 500 images or more); the bytes written are the same')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace a non-empty OUT_DIR that this tool did not write')
    return parser.parse_args()


def main():
    args = parse_args()
    start = time.time()
    counts = generate_synthetic_reid(
        args.out_dir,
        num_train_ids=args.num_train_ids,
        num_test_ids=args.num_test_ids,
        images_per_id=args.images_per_id,
        num_cams=args.num_cams,
        seed=args.seed,
        size=tuple(args.size),
        num_distractors=args.num_distractors,
        num_junk=args.num_junk,
        overwrite=args.overwrite,
        workers=args.workers)
    print(f'{args.out_dir} ({time.time() - start:.1f} s):')
    for key, value in counts.items():
        print(f'  {key}: {value}')


if __name__ == '__main__':
    main()
