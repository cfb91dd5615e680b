"""The exact kNN search with and without a screen, on this CPU.

Times, on the same features in one process:

- the float32 brute force (faiss's flat search: the reference's, and
  ``method='exact'``, which ``'auto'`` picks on CPUs without native
  bfloat16);
- the screened exact search of :mod:`mmcc.clustering.knn_screened` with
  its bfloat16 screen, where the CPU multiplies bfloat16 natively (else
  skipped: emulated bfloat16 is slower than float32);
- a candidate screen for CPUs without native bfloat16, kept here and not
  in the library because it measured slower than the float32 search
  (``docs/scaling.md``): a **projection screen**. Every row splits into
  its coordinates ``p`` on the d leading principal directions and a
  residual ``r`` orthogonal to them, so ``<x_i, x_j> = <p_i, p_j> +
  <r_i, r_j> <= <u_i, u_j>`` with ``u = [p, |r|]`` (Cauchy-Schwarz): a
  float32 product in d + 1 dimensions bounds every score from above, and
  the library's certificate keeps the result exact.

Prints each time as a ratio of the float32 time, how many rows the screen
could not certify, and each screened result against the float32 lists (the
share of equal ids, and the largest gap between their similarities: the
float32 rounding of two kernels, ~1e-6)::

    python tools/analysis_tools/benchmark_knn_screen.py --size 32621
    python tools/analysis_tools/benchmark_knn_screen.py --features feats.npy

Features: :func:`mmcc.testing.embeddings.make_reid_embeddings` (default;
fitted to real re-ID embeddings' neighbourhoods) or an (N, D) ``.npy``.
"""
import argparse
import os
import time
from functools import partial
from typing import Optional, Tuple

import numpy as np
import torch

from mmcc.clustering import knn_search
from mmcc.clustering.knn import _exact_queries, canonical_neighbours
from mmcc.clustering.knn_screened import (certified_lists, screened_search,
                                          symmetric_screen)
from mmcc.testing.embeddings import make_reid_embeddings
from mmcc.utils import cpu_has_native_bf16
from mmcc.utils.host import cpu_vector_flags

# Rows whose second moment gives the principal directions: any orthonormal
# basis keeps the search exact, a good one only makes it faster.
BASIS_SAMPLE_ROWS = 4096


def projection_screen_features(x: torch.Tensor,
                               dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rows whose float32 inner products bound the features' from above.

    ``Q`` (D, d): the leading eigenvectors of a sample's second moment,
    orthonormal to ~1e-15 (float64). ``p = Q^T x`` in float64, ``|r|^2 =
    |x|^2 - |p|^2`` plus a margin (1e-10 |x|^2, above the float64 errors)
    that keeps ``|r|`` an upper bound. The float32 product of the u's
    exceeds the exact one by at most ``base_i``: the rounding of u to
    float32 and of the (d + 1)-term sum (``gamma_{d+1}``), doubled, in
    terms of ``|x_i| max_j |x_j|``, plus 1e-6 for subnormals.

    Args:
        x: (N, D) float32 features.
        dim: d, the principal directions kept (< D).

    Returns:
        ``(u, base)``: (N, d + 1) float32 and (N,) float32, with
        ``<x_i, x_j> <= fl(<u_i, u_j>) + base_i`` for all i, j.
    """
    n = x.shape[0]
    sample = x
    if n > BASIS_SAMPLE_ROWS:
        generator = torch.Generator().manual_seed(0)
        sample = x[torch.randperm(n, generator=generator)[:BASIS_SAMPLE_ROWS]]
    _, vectors = torch.linalg.eigh((sample.T @ sample).double())
    basis = vectors[:, -dim:].contiguous()
    u = torch.empty(n, dim + 1)
    norms = torch.empty(n)
    step = 4096
    for lo in range(0, n, step):
        rows = x[lo:lo + step].double()
        coords = rows @ basis
        squared = rows.square().sum(1)
        residual = (squared - coords.square().sum(1)).clamp_(min=0)
        u[lo:lo + len(rows), :dim] = coords
        u[lo:lo + len(rows), dim] = residual.add_(1e-10 * squared).sqrt_()
        norms[lo:lo + len(rows)] = squared.sqrt()
    terms = dim + 1
    gamma = terms * 2.0**-24 / (1 - terms * 2.0**-24)
    base = (2 * (gamma + 3 * 2.0**-24) + 1e-9) * norms * norms.max() + 1e-6
    return u, base


def projection_screened_search(x: np.ndarray,
                               k: int,
                               fallback,
                               dim: int = 256,
                               extra: int = 1024
                               ) -> Tuple[np.ndarray, np.ndarray, int]:
    """The library's screened search with the projection screen."""
    m = min(len(x) - 1, k - 1 + extra)
    previous = torch.get_float32_matmul_precision()
    # 'medium' would let oneDNN multiply float32 in bfloat16: no bound then
    torch.set_float32_matmul_precision('highest')
    try:
        u, base = projection_screen_features(torch.from_numpy(x), dim)
        cand, screen = symmetric_screen(u, m)
    finally:
        torch.set_float32_matmul_precision(previous)
    reach = (screen[:, -1] + base).numpy()
    return certified_lists(x, k, cand.numpy(), reach, fallback)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: Optional[list] = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=32621)
    parser.add_argument('--dim', type=int, default=2048)
    parser.add_argument('--k', type=int, default=30)
    parser.add_argument('--features', help='(N, D) .npy of real embeddings')
    parser.add_argument(
        '--projection-dims',
        type=int,
        nargs='+',
        default=[256, 384],
        help='d of the projection screen')
    parser.add_argument(
        '--extras',
        type=int,
        nargs='+',
        default=[1024, 2048],
        help='candidates of the projection screen beyond the k - 1')
    args = parser.parse_args(argv)
    print(f'CPU {cpu_vector_flags()}; cpus {os.cpu_count()}, load average '
          f'{os.getloadavg()[0]:.2f} at start')
    if args.features:
        x = np.load(args.features).astype(np.float32)
    else:
        x, _ = make_reid_embeddings(args.size, args.dim, seed=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n, k = len(x), args.k
    print(f'N={n} D={x.shape[1]} k={k}')
    (want, want_sims), base = timed(lambda: knn_search(x, k, method='exact'))
    print(f'float32 brute force: {base:.1f} s')
    fallback = partial(_exact_queries, use_faiss=True)
    runs = [(f'projection d={d} extra={e}',
             partial(projection_screened_search, dim=d, extra=e))
            for d in args.projection_dims for e in args.extras]
    if cpu_has_native_bf16():
        runs.append(('bf16 screen', screened_search))
    else:
        print('bf16 screen: skipped (no native bfloat16 on this CPU)')
    for label, search in runs:
        (ids, sims, redone), seconds = timed(lambda: search(x, k, fallback))
        got, got_sims = canonical_neighbours(x, ids, sims, k)
        print(f'{label}: {seconds:.1f} s, x{base / seconds:.2f} the float32 '
              f'speed; {redone} of {n} rows searched again in float32; ids '
              f'equal to the float32 lists: {(got == want).mean():.6f}, '
              'largest similarity gap '
              f'{np.abs(got_sims - want_sims).max():.1e}')


if __name__ == '__main__':
    main()
