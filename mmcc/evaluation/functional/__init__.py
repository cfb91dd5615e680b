from .rank import rank_metrics, re_ranking
from .ranked_list import RankedList, ranked_lists

__all__ = ['rank_metrics', 're_ranking', 'RankedList', 'ranked_lists']
