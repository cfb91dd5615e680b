"""k-reciprocal Jaccard distance between training embeddings (pseudo-labels).

The distance Cluster Contrast feeds to DBSCAN (k1=30, k2=6): one exact kNN
search gives every point its k1 nearest points, itself included and first
(:func:`mmcc.clustering.knn_search`), and the k-reciprocal core
(:mod:`mmcc.clustering.k_reciprocal`) turns these lists into d_J with the
clustering reference's conventions: R(i) from the k1 entries (the point
counted among them), Rh(i) from the first ``round(k1 / 2) + 1``, weights
``softmax(-(2 - 2 <x_i, x_j>))``.

Cost beyond the kNN search: O(N k1 D) for the weights, and for the
min-sum every row meets the rows sharing one of its O(k1 k2) columns;
memory O(N k1 k2) for V and Vq, plus the stored pairs of the result.

The reference implementation's dense computation, O(N^2) time and memory,
is ``mmcc.testing.naive_k_reciprocal.naive_jaccard_distance``, the baseline
of the tests and of ``benchmark_pseudo_labels.py``; both give the same
float32 values bit for bit. The reference's ``use_float16`` storage option
(off in its training scripts) is not reproduced.
"""
import logging
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
from mmengine.logging import print_log

from mmcc.utils.checks import check_features, check_int, l2_normalised
from mmcc.utils.timing import StageClock
from .k_reciprocal import k_reciprocal_jaccard
from .knn import ArrayLike, as_float32_numpy, knn_search


def jaccard_distance(features: ArrayLike,
                     k1: int = 30,
                     k2: int = 6,
                     knn: str = 'auto',
                     knn_backend: str = 'auto',
                     rank: Optional[np.ndarray] = None,
                     timings: Optional[dict] = None,
                     knn_options: Optional[dict] = None,
                     max_distance: Optional[float] = None) -> sp.csr_matrix:
    """k-reciprocal Jaccard distance between all rows of ``features``.

    Args:
        features: (N, D) finite embeddings, array or tensor (a tensor stays
            on its device for the softmax weights), N >= 1. Rows are
            L2-normalised here unless every norm is within 1e-3 of 1
            already (then used as given: the same result bit for bit).
        k1: Size of the kNN lists, the point itself included, >= 1. Above
            N the lists are clamped to N points, with a warning: every pair
            is then k-reciprocal and the distance stops telling
            neighbourhoods apart (:func:`cluster_features` therefore
            clamps k1 further, to N // 3). ``round(k1 / 2)`` keeps the
            given k1, as in the naive baseline.
        k2: Size of the local query expansion, itself included,
            1 <= k2 <= k1 (clamped to N with k1).
        knn: kNN method, ``'auto'``, ``'exact'``, ``'screened'``,
            ``'hnsw'`` or ``'ivf'`` (:func:`mmcc.clustering.knn_search`).
        knn_backend: ``'auto'``, ``'faiss'`` or ``'torch'``.
        rank: Optional precomputed (N, >= min(k1, N)) kNN lists in the
            canonical order of :func:`knn_search` (self first), e.g. to run
            this function and the naive baseline on the same lists.
        timings: Optional dict; wall seconds of the stages are added to it
            as ``'knn'`` and ``'jaccard'``.
        knn_options: Options of the kNN method, e.g. ``dict(nprobe=64)``
            for ``'ivf'`` (:func:`mmcc.clustering.knn_search`).
        max_distance: Store only the pairs with d_J <= this (e.g. DBSCAN's
            eps: the labels do not change, the memory shrinks by orders of
            magnitude on weak embeddings).

    Returns:
        (N, N) float32 ``scipy.sparse.csr_matrix`` with sorted indices
        storing d_J for every pair whose expanded neighbourhoods overlap,
        the diagonal always stored (an explicit 0 where d_J(i, i) is 0);
        every pair not stored has d_J = 1, the maximum.

    Raises:
        ValueError: ``features`` not (N, D) with N >= 1, with NaN/Inf
            values or a row of norm 0; ``k1``, ``k2`` not integers >= 1, or
            ``k2 > k1``.
    """
    k1, k2 = check_int(k1, 'k1'), check_int(k2, 'k2')
    if k2 > k1:
        raise ValueError(f'k2={k2} must not exceed k1={k1}: the query '
                         'expansion averages over the first k2 entries of '
                         'the k1-long kNN lists')
    if isinstance(features, torch.Tensor):
        x = features.detach().float().contiguous()
    else:
        x = torch.from_numpy(as_float32_numpy(features))
    check_features(x)
    x = l2_normalised(x)
    n = x.shape[0]
    width = min(k1, n)
    if width < k1:
        print_log(
            f'jaccard_distance: k1={k1} is more than the N={n} points; kNN '
            f'lists clamped to {n}' + (f', k2={k2} to {n}' if k2 > n else '') +
            '. Every pair is then k-reciprocal and the distance barely '
            'separates groups: use k1 <= N // 3 (cluster_features does)',
            logger='current',
            level=logging.WARNING)
    clock = StageClock(timings)
    if rank is None:
        with clock('knn'):
            rank, _ = knn_search(
                x,
                width,
                method=knn,
                backend=knn_backend,
                **(knn_options or {}))
    rank = np.ascontiguousarray(rank[:, :width], dtype=np.int64)
    if rank.shape != (n, width) or (rank[:, 0] != np.arange(n)).any():
        raise ValueError('rank must hold (N, >= min(k1, N)) kNN lists with '
                         'every point first in its own list (knn_search)')
    with clock('jaccard'):
        return k_reciprocal_jaccard(x, rank, k1, k2, max_distance=max_distance)
