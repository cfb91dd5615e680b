from .rank import rank_metrics, re_ranking

__all__ = ['rank_metrics', 're_ranking']
