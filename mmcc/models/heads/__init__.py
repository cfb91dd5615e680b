from .cluster_memory_head import ClusterMemoryHead

__all__ = ['ClusterMemoryHead']
