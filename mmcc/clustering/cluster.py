"""Pseudo-labels from embeddings: DBSCAN, Infomap, HDBSCAN.

Every function returns (N,) int64 labels: -1 for noise (dropped from the
epoch's training set), clusters numbered 0..K-1 without gaps, in order of
their smallest member index. :func:`cluster_features` is the single entry
point the pseudo-label hook calls with a config dict.
"""
import inspect
import logging
import math
import numbers
import warnings
from typing import Optional, Union

import numpy as np
import scipy.sparse as sp
import torch
from mmengine.logging import print_log
from scipy.sparse import csgraph
from sklearn.cluster import DBSCAN, HDBSCAN

from mmcc.utils.checks import check_features, check_finite, check_int
from mmcc.utils.timing import StageClock
from .jaccard import jaccard_distance
from .knn import ArrayLike, as_float32_numpy, knn_search

Distance = Union[np.ndarray, sp.spmatrix, sp.sparray]


def _warn(message: str) -> None:
    print_log(message, logger='current', level=logging.WARNING)


def _check_distance(distance, name: str = 'distance') -> None:
    """Require a square 2-D distance matrix, dense or sparse, finite."""
    shape = tuple(distance.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f'{name} must be a square (N, N) matrix, got shape '
                         f'{shape}')
    check_finite(distance, name)


def _check_positive(value, name: str) -> float:
    """A finite real number > 0."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f'{name} must be a finite number > 0, got {value!r}')
    return float(value)


def _as_features(features: ArrayLike):
    """Checked (N, D) features: a float32 tensor stays a tensor."""
    if isinstance(features, torch.Tensor):
        features = features.detach().float()
    else:
        features = as_float32_numpy(features)
    check_features(features)
    return features


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber cluster ids 0..K-1 by smallest member index; keep -1.

    Args:
        labels: (N,) integer labels, negative = noise.

    Returns:
        (N,) int64.
    """
    labels = np.asarray(labels).astype(np.int64, copy=False)
    out = np.full(labels.shape, -1, dtype=np.int64)
    clustered = labels >= 0
    if clustered.any():
        ids, first = np.unique(labels[clustered], return_index=True)
        rank = np.empty(ids.size, dtype=np.int64)
        rank[np.argsort(first, kind='stable')] = np.arange(ids.size)
        out[clustered] = rank[np.searchsorted(ids, labels[clustered])]
    return out


def _as_csr(distance) -> sp.csr_matrix:
    """CSR copy of a sparse matrix that keeps explicitly stored zeros."""
    coo = sp.coo_matrix(distance)
    # coo -> csr sums duplicates but never drops stored zeros
    return sp.csr_matrix((coo.data, (coo.row, coo.col)), shape=coo.shape)


def neighbour_graph(distance, eps: float) -> sp.csr_matrix:
    """Entries of a sparse distance matrix with ``d <= eps``, rows by d.

    A stored 0 (duplicates, the diagonal) is a neighbour; an entry that is not
    stored is not. Rows are sorted by distance, the layout scikit-learn's
    precomputed neighbour search expects (it would otherwise copy and warn).

    Args:
        distance: (N, N) scipy sparse distances.
        eps: Radius (compared in the matrix's dtype, like scikit-learn).

    Returns:
        (N, N) CSR holding only the kept entries.
    """
    csr = _as_csr(distance)
    row = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    keep = csr.data <= eps
    row, col, data = row[keep], csr.indices[keep], csr.data[keep]
    order = np.lexsort((data, row))
    indptr = np.zeros(csr.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=csr.shape[0]), out=indptr[1:])
    return sp.csr_matrix((data[order], col[order], indptr), shape=csr.shape)


def dbscan_labels(distance: Distance,
                  eps: float = 0.6,
                  min_samples: int = 4) -> np.ndarray:
    """DBSCAN on precomputed distances (scikit-learn).

    Args:
        distance: (N, N) distances: a dense array, or a scipy sparse matrix
            in which only stored entries can be neighbours (pairs not stored
            are "far"; stored zeros are neighbours), such as
            :func:`jaccard_distance` returns.
        eps: Neighbourhood radius (inclusive, ``d <= eps``), finite, > 0.
        min_samples: Neighbours, the point itself included, of a core point
            (>= 1).

    Returns:
        (N,) int64 labels, -1 = noise, clusters 0..K-1 (empty for N = 0).

    Raises:
        ValueError: ``distance`` not square 2-D or with NaN/Inf entries,
            ``eps`` or ``min_samples`` out of range.
    """
    eps = _check_positive(eps, 'eps')
    min_samples = check_int(min_samples, 'min_samples')
    if not sp.issparse(distance):
        distance = np.asarray(distance)
    _check_distance(distance)
    n = distance.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if sp.issparse(distance):
        distance = neighbour_graph(distance, eps)
    labels = DBSCAN(
        eps=eps, min_samples=min_samples,
        metric='precomputed').fit_predict(distance)
    return compact_labels(labels)


def infomap_labels(features: ArrayLike,
                   k1: int = 15,
                   k2: int = 4,
                   min_sim: float = 0.5,
                   seed: int = 1,
                   knn: str = 'auto',
                   knn_backend: str = 'auto') -> np.ndarray:
    """Infomap communities of the cosine kNN graph (the reference's variant).

    An exact kNN search (``k1`` entries, the point itself included) gives a
    directed edge i -> j, weight = cosine similarity, for every neighbour
    j != i with similarity >= ``min_sim`` (compared, as the reference does,
    as ``1 - sim <= 1 - min_sim`` in float32). Two-level directed Infomap
    (seeded) partitions the nodes; node -> module is read from the library's
    result. Points with no edge are singleton communities; every community
    of ``k2`` members or fewer is noise.

    Similarities are cosines: rows are L2-normalised unless every norm is
    within 1e-3 of 1 already (:func:`knn_search`). ``k1`` above N is
    clamped to N with a warning (the graph is then complete before the
    ``min_sim`` threshold, which alone decides the edges).

    Args:
        features: (N, D) finite embeddings, N >= 1.
        k1: kNN list size, self included (>= 1).
        k2: Communities with at most ``k2`` members become noise (>= 0;
            0 keeps every community, singletons included).
        min_sim: Smallest cosine similarity of an edge (finite).
        seed: Infomap's random seed (>= 1).
        knn, knn_backend: See :func:`mmcc.clustering.knn_search`.

    Returns:
        (N,) int64 labels, -1 = noise, clusters 0..K-1.

    Raises:
        ValueError: ``features`` not (N, D) with N >= 1, with NaN/Inf
            values or a zero row; ``k1``, ``k2``, ``min_sim`` out of range.
    """
    import infomap

    k1 = check_int(k1, 'k1')
    k2 = check_int(k2, 'k2', minimum=0)
    if (isinstance(min_sim, bool) or not isinstance(min_sim, numbers.Real)
            or not math.isfinite(min_sim)):
        raise ValueError(f'min_sim must be a finite number, got {min_sim!r}')
    features = _as_features(features)
    n = features.shape[0]
    if k1 > n:
        _warn(f'infomap_labels: k1={k1} is more than the N={n} points; '
              f'using k1={n} (every point is a candidate neighbour, '
              f'min_sim={min_sim} alone decides the edges)')
        k1 = n
    ids, sims = knn_search(features, k1, method=knn, backend=knn_backend)
    dists = np.float32(1) - sims
    edge = (ids != np.arange(n)[:, None]) & (dists <= np.float32(1 - min_sim))
    src = np.repeat(np.arange(n), edge.sum(1))
    dst = ids[edge]
    weight = sims[edge].astype(np.float64)

    community = np.arange(n, dtype=np.int64) + n  # singletons by default
    if src.size:
        im = infomap.Infomap(
            two_level=True,
            directed=True,
            silent=True,
            seed=seed,
            num_trials=1)
        im.add_links(np.stack([src, dst, weight], axis=1))
        result = im.run()
        if result is not None and hasattr(result, 'modules'):
            modules = result.modules()
        else:  # infomap < 2.16: the result lives on the Infomap object
            modules = im.get_modules()
        nodes = np.fromiter(modules.keys(), dtype=np.int64, count=len(modules))
        mods = np.fromiter(
            modules.values(), dtype=np.int64, count=len(modules))
        community[nodes] = mods
    _, inverse, sizes = np.unique(
        community, return_inverse=True, return_counts=True)
    labels = np.where(sizes[inverse] > k2, inverse, -1)
    return compact_labels(labels)


def _complete_sparse_for_hdbscan(distance, min_samples: int,
                                 missing: float) -> sp.csr_matrix:
    """Make a sparse distance matrix acceptable to scikit-learn's HDBSCAN.

    scikit-learn's sparse path needs >= ``min_samples`` stored entries per
    row and one connected component, and its MST drops zero-weight edges.
    Pairs not stored are at distance ``missing`` (d_J = 1 for Jaccard), the
    largest value, so storing some of them with that value changes no core
    distance and keeps an MST of the completed matrix: rows short of entries
    get ``missing`` to their next indices, components are chained by
    ``missing`` edges (symmetrically). The diagonal is stored (the point
    counts for its own core distance); off-diagonal zeros (exact duplicates)
    become the smallest positive float64.
    """
    coo = sp.coo_matrix(distance)
    n = coo.shape[0]
    off = coo.row != coo.col
    rows, cols = [coo.row[off], np.arange(n)], [coo.col[off], np.arange(n)]
    data = coo.data[off].astype(np.float64)
    data[data == 0] = np.finfo(np.float64).tiny
    vals = [data, np.zeros(n)]
    counts = np.bincount(coo.row[off], minlength=n) + 1
    short = np.flatnonzero(counts < min_samples)
    if short.size:
        csr = _as_csr(distance)
        for i in short:
            have = set(csr.indices[csr.indptr[i]:csr.indptr[i + 1]].tolist())
            have.add(i)
            extra, j = [], i
            while len(extra) < min_samples - counts[i]:
                j = (j + 1) % n
                if j not in have:
                    extra.append(j)
            extra = np.array(extra)
            rows += [np.full(extra.size, i), extra]
            cols += [extra, np.full(extra.size, i)]
            vals += [np.full(2 * extra.size, missing)]
    rows, cols, vals = (np.concatenate(rows), np.concatenate(cols),
                        np.concatenate(vals))
    num, comp = csgraph.connected_components(
        sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n)),
        directed=False)
    if num > 1:  # chain one member of every component to the next
        reps = np.unique(comp, return_index=True)[1]
        rows = np.concatenate([rows, reps[:-1], reps[1:]])
        cols = np.concatenate([cols, reps[1:], reps[:-1]])
        vals = np.concatenate([vals, np.full(2 * (num - 1), missing)])
    # one value per pair (an added pair may already be stored: keep the max)
    key = rows.astype(np.int64) * n + cols
    order = np.lexsort((-vals, key))
    key, vals = key[order], vals[order]
    first = np.ones(key.size, dtype=bool)
    first[1:] = key[1:] != key[:-1]
    key, vals = key[first], vals[first]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(key // n, minlength=n), out=indptr[1:])
    return sp.csr_matrix((vals, key % n, indptr), shape=(n, n))


def hdbscan_labels(distance: Union[Distance, ArrayLike],
                   min_cluster_size: int = 4,
                   min_samples: Optional[int] = None,
                   metric: str = 'precomputed',
                   cluster_selection_epsilon: float = 0.0,
                   allow_single_cluster: bool = False,
                   missing_distance: float = 1.0) -> np.ndarray:
    """HDBSCAN (scikit-learn) on distances or on features.

    Args:
        distance: (N, N) precomputed distances (dense, or scipy sparse with
            unstored pairs at ``missing_distance``, e.g. the sparse Jaccard
            distance) when ``metric='precomputed'``; else (N, D) features,
            N >= 1. Finite either way (scikit-learn's special labels for
            infinite and missing entries are not used).
        min_cluster_size: Smallest cluster (>= 1; raised to 2, clamped to
            N).
        min_samples: Core-distance neighbourhood, the point itself included
            (>= 1; defaults to ``min_cluster_size``; clamped to N).
        metric: ``'precomputed'`` or a scikit-learn metric for features.
        cluster_selection_epsilon, allow_single_cluster: As in scikit-learn.
        missing_distance: Distance of the pairs a sparse matrix leaves out.

    Sparse input: scikit-learn accepts sparse precomputed distances only if
    every row holds >= min_samples entries and the graph is connected; the
    missing pairs are therefore filled in where needed with
    ``missing_distance`` (see :func:`_complete_sparse_for_hdbscan`), which
    gives the result HDBSCAN has on the completed dense matrix up to ties
    and exact duplicates (distance 0 becomes the smallest positive float).

    Returns:
        (N,) int64 labels, -1 = noise, clusters 0..K-1.

    Raises:
        ValueError: Wrong shape, NaN/Inf values, ``min_cluster_size`` or
            ``min_samples`` below 1.
    """
    min_cluster_size = check_int(min_cluster_size, 'min_cluster_size')
    if min_samples is not None:
        min_samples = check_int(min_samples, 'min_samples')
    if metric == 'precomputed':
        if not sp.issparse(distance):
            distance = np.asarray(distance)
        _check_distance(distance)
    elif sp.issparse(distance):
        check_finite(distance, 'distance')
    else:
        distance = as_float32_numpy(distance)
        check_features(distance, 'distance')
    n = distance.shape[0]
    if n < 2:  # scikit-learn refuses a single sample
        return np.full(n, -1, dtype=np.int64)
    min_cluster_size = max(2, min(min_cluster_size, n))
    min_samples = min(min_samples or min_cluster_size, n)
    if metric == 'precomputed' and sp.issparse(distance):
        distance = _complete_sparse_for_hdbscan(distance, min_samples,
                                                missing_distance)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        labels = HDBSCAN(
            min_cluster_size=min_cluster_size,
            min_samples=min_samples,
            metric=metric,
            cluster_selection_epsilon=cluster_selection_epsilon,
            allow_single_cluster=allow_single_cluster,
            copy=True).fit_predict(distance)
    return compact_labels(labels)


_JACCARD_KEYS = ('k1', 'k2', 'knn', 'knn_backend', 'knn_options')


def _check_early(labeller, cfg: dict) -> None:
    """Check a clustering config before the Jaccard distance is computed.

    Unknown keys and bad DBSCAN/HDBSCAN parameters fail at once rather than
    after the distance, the expensive step.
    """
    params = inspect.signature(labeller).parameters
    unknown = sorted(set(cfg) - set(params) - {'distance'})
    if unknown:
        raise TypeError(f'{labeller.__name__} got unexpected config keys '
                        f'{unknown}')
    if labeller is dbscan_labels:
        _check_positive(cfg.get('eps', params['eps'].default), 'eps')
    for key in ('min_samples', 'min_cluster_size'):
        if cfg.get(key) is not None:
            check_int(cfg[key], key)


def cluster_features(features: ArrayLike,
                     cfg: dict,
                     timings: Optional[dict] = None) -> np.ndarray:
    """Pseudo-labels of all embeddings from a clustering config.

    Configs (defaults shown; the Jaccard keys ``k1, k2, knn,
    knn_backend, knn_options`` go to :func:`jaccard_distance`)::

        dict(type='dbscan', eps=0.6, min_samples=4, k1=30, k2=6,
             knn='auto')
        dict(type='dbscan', knn='ivf')  # approximate, for N >~ 300k
        dict(type='infomap', k1=15, k2=4, min_sim=0.5, seed=1)
        dict(type='hdbscan', k1=30, k2=6, min_cluster_size=4)

    Small sets: the Jaccard distance needs k1 small beside N. With
    ``k1 > N // 3`` the given k1 and k2 become ``max(1, N // 3)`` and
    ``min(k2, that)``, with a warning (why: see the comment in the code).

    A result with a single cluster is returned with a warning: ClusterNCE
    over one cluster is a constant loss. A result with no cluster (all
    noise) is returned as it is.

    Args:
        features: (N, D) finite embeddings (array or tensor), N >= 1,
            L2-normalised here unless already unit rows.
        cfg: The config; ``type`` is case-insensitive.
        timings: Optional dict; the wall seconds of the stages are added
            to it (``knn``, ``jaccard``, ``dbscan``/``hdbscan``, or
            ``infomap``).

    Returns:
        (N,) int64 labels, -1 = noise, clusters 0..K-1.

    Raises:
        ValueError: Unknown type; bad features or parameters (see the
            functions above).
    """
    cfg = dict(cfg)
    kind = str(cfg.pop('type', 'dbscan')).lower()
    if kind not in ('dbscan', 'hdbscan', 'infomap'):
        raise ValueError(f'unknown clustering type {kind!r}')
    features = _as_features(features)
    n = features.shape[0]
    clock = StageClock(timings)
    if kind == 'infomap':
        with clock('infomap'):
            labels = infomap_labels(features, **cfg)
    else:
        jac = {key: cfg.pop(key) for key in _JACCARD_KEYS if key in cfg}
        k1 = check_int(jac.setdefault('k1', 30), 'k1')
        k2 = check_int(jac.setdefault('k2', 6), 'k2')
        if k2 > k1:
            raise ValueError(f'k2={k2} must not exceed k1={k1}')
        _check_early(dbscan_labels if kind == 'dbscan' else hdbscan_labels,
                     cfg)
        # Clamp k1 to N // 3 on small sets. At k1 >= N every kNN list is
        # the whole set, so every pair is k-reciprocal, R(i) is all N
        # points and V[i] a softmax of -d over all of them: the distance
        # loses its locality and DBSCAN merges groups (five blobs of 5
        # points, k1 = 30: K = 2; still K = 2 at k1 = N - 1 = 24). Points
        # of two groups are far (d_J near 1) only if their expanded sets
        # E barely overlap, and |E| reaches about 1.5 k1 (R(i) plus the
        # accepted half-width sets; measured on Gaussian blobs: mean 0.8
        # to 1.25 k1, 90th percentile up to 1.5 k1), so two of them fit
        # side by side in N points only while 3 k1 <= N. Measured on the
        # five blobs (D = 16, noise 0.05, 10 seeds): K = 5 for every seed
        # at k1 = N // 3 = 8, for 2 of 10 at N // 2 = 12, never at 24.
        local = max(1, n // 3)
        if k1 > local:
            jac.update(k1=local, k2=min(k2, local))
            _warn(f'cluster_features: k1={k1} is too large for N={n} '
                  f'points; using k1={local} (N // 3), k2={jac["k2"]} so '
                  'that k-reciprocal neighbourhoods stay local')
        # DBSCAN reads no pair farther than eps: do not store them
        cut = _check_positive(cfg.get('eps', 0.6), 'eps') if \
            kind == 'dbscan' else None
        distance = jaccard_distance(
            features, **jac, timings=timings, max_distance=cut)
        with clock(kind):
            if kind == 'dbscan':
                labels = dbscan_labels(distance, **cfg)
            else:
                labels = hdbscan_labels(distance, **cfg)
    num_clusters = int(labels.max()) + 1 if labels.size else 0
    if num_clusters == 1:
        size = int((labels == 0).sum())
        _warn(f'cluster_features: a single cluster ({size} of {n} points, '
              f'{n - size} noise): ClusterNCE over one cluster is a constant '
              'loss with zero gradient')
    return labels
