"""Pseudo-labelling core: kNN, k-reciprocal Jaccard distance, clustering.

Plain functions on arrays/tensors, free of the Runner:
:func:`knn_search` -> :func:`jaccard_distance` -> :func:`dbscan_labels` /
:func:`hdbscan_labels`, or :func:`infomap_labels` on the kNN graph;
:func:`cluster_features` dispatches on a config dict;
:func:`cluster_centroids` and :func:`pseudo_label_stats` describe the
result. The k-reciprocal stages (:mod:`.k_reciprocal`) also serve
test-time re-ranking.
"""
from .cluster import (cluster_features, compact_labels, dbscan_labels,
                      hdbscan_labels, infomap_labels, neighbour_graph)
from .jaccard import jaccard_distance
from .k_reciprocal import (expanded_sets, expansion_weights, half_width,
                           k_reciprocal_jaccard, min_sum_distance,
                           query_expansion, reciprocal_mask)
from .knn import canonical_neighbours, faiss_available, knn_search
from .pseudo_labels import cluster_centroids, pseudo_label_stats

__all__ = [
    'knn_search', 'canonical_neighbours', 'faiss_available',
    'jaccard_distance', 'k_reciprocal_jaccard', 'reciprocal_mask',
    'expanded_sets', 'expansion_weights', 'query_expansion',
    'min_sum_distance', 'half_width', 'dbscan_labels', 'infomap_labels',
    'hdbscan_labels', 'neighbour_graph', 'compact_labels', 'cluster_features',
    'cluster_centroids', 'pseudo_label_stats'
]
