"""Plain tensor functions behind the registered model components."""
from .instance_memory import cluster_prototypes, instance_momentum_update
from .momentum_update import check_update_args, momentum_update
from .sharded_cluster_nce import (ShardedNCEOutput, shard_range,
                                  sharded_cluster_nce)

__all__ = [
    'momentum_update', 'check_update_args', 'instance_momentum_update',
    'cluster_prototypes', 'sharded_cluster_nce', 'shard_range',
    'ShardedNCEOutput'
]
