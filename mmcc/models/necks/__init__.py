from .bn_neck import BNNeck

__all__ = ['BNNeck']
