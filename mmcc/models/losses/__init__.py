from .cluster_nce_loss import ClusterNCELoss

__all__ = ['ClusterNCELoss']
