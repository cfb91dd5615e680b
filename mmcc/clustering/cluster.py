"""Pseudo-labels from embeddings: DBSCAN, Infomap, HDBSCAN.

Every function returns (N,) int64 labels: -1 for noise (dropped from the
epoch's training set), clusters numbered 0..K-1 without gaps, in order of
their smallest member index. :func:`cluster_features` is the single entry
point the pseudo-label hook calls with a config dict.
"""
import warnings
from typing import Optional, Union

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph
from sklearn.cluster import DBSCAN, HDBSCAN

from .jaccard import jaccard_distance
from .knn import ArrayLike, knn_search

Distance = Union[np.ndarray, sp.spmatrix, sp.sparray]


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
        eps: Neighbourhood radius (inclusive, ``d <= eps``).
        min_samples: Neighbours, the point itself included, of a core point.

    Returns:
        (N,) int64 labels, -1 = noise, clusters 0..K-1.
    """
    n = distance.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if sp.issparse(distance):
        distance = neighbour_graph(distance, eps)
    else:
        distance = np.asarray(distance)
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

    Args:
        features: (N, D) L2-normalised embeddings.
        k1: kNN list size, self included.
        k2: Communities with at most ``k2`` members become noise.
        min_sim: Smallest cosine similarity of an edge.
        seed: Infomap's random seed (>= 1).
        knn, knn_backend: See :func:`mmcc.clustering.knn_search`.

    Returns:
        (N,) int64 labels, -1 = noise, clusters 0..K-1.
    """
    import infomap

    ids, sims = knn_search(features, k1, method=knn, backend=knn_backend)
    n = ids.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
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
            distance) when ``metric='precomputed'``; else (N, D) features.
        min_cluster_size: Smallest cluster.
        min_samples: Core-distance neighbourhood, the point itself included
            (defaults to ``min_cluster_size``; clamped to N).
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
    """
    if metric != 'precomputed' and not sp.issparse(distance):
        from .knn import as_float32_numpy
        distance = as_float32_numpy(distance)
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


_JACCARD_KEYS = ('k1', 'k2', 'knn', 'knn_backend')


def cluster_features(features: ArrayLike, cfg: dict) -> np.ndarray:
    """Pseudo-labels of all embeddings from a clustering config.

    Configs (defaults shown; the Jaccard keys ``k1, k2, knn,
    knn_backend`` go to :func:`jaccard_distance`)::

        dict(type='dbscan', eps=0.6, min_samples=4, k1=30, k2=6,
             knn='auto')
        dict(type='infomap', k1=15, k2=4, min_sim=0.5, seed=1)
        dict(type='hdbscan', k1=30, k2=6, min_cluster_size=4)

    Args:
        features: (N, D) L2-normalised embeddings (array or tensor).
        cfg: The config; ``type`` is case-insensitive.

    Returns:
        (N,) int64 labels, -1 = noise, clusters 0..K-1.
    """
    cfg = dict(cfg)
    kind = str(cfg.pop('type', 'dbscan')).lower()
    if kind == 'infomap':
        return infomap_labels(features, **cfg)
    if kind not in ('dbscan', 'hdbscan'):
        raise ValueError(f'unknown clustering type {kind!r}')
    jac = {key: cfg.pop(key) for key in _JACCARD_KEYS if key in cfg}
    jac.setdefault('k1', 30)
    jac.setdefault('k2', 6)
    distance = jaccard_distance(features, **jac)
    if kind == 'dbscan':
        return dbscan_labels(distance, **cfg)
    return hdbscan_labels(distance, **cfg)
