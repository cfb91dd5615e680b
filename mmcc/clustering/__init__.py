"""Pseudo-labelling core: kNN, k-reciprocal Jaccard distance, clustering.

Plain functions on arrays/tensors, free of the Runner:
:func:`knn_search` -> :func:`jaccard_distance` -> :func:`dbscan_labels` /
:func:`hdbscan_labels`, or :func:`infomap_labels` on the kNN graph;
:func:`cluster_features` dispatches on a config dict.
"""
from .cluster import (cluster_features, compact_labels, dbscan_labels,
                      hdbscan_labels, infomap_labels, neighbour_graph)
from .jaccard import (expanded_sets, expansion_weights, half_width,
                      jaccard_distance, min_sum_distance, query_expansion,
                      reciprocal_mask)
from .knn import canonical_neighbours, faiss_available, knn_search

__all__ = [
    'knn_search', 'canonical_neighbours', 'faiss_available',
    'jaccard_distance', 'reciprocal_mask', 'expanded_sets',
    'expansion_weights', 'query_expansion', 'min_sum_distance', 'half_width',
    'dbscan_labels', 'infomap_labels', 'hdbscan_labels', 'neighbour_graph',
    'compact_labels', 'cluster_features'
]
