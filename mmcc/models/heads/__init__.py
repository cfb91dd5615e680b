from .cluster_memory_head import ClusterMemoryHead
from .instance_memory_head import InstanceMemoryHead

__all__ = ['ClusterMemoryHead', 'InstanceMemoryHead']
