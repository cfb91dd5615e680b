from .reid_model import ReIDModel

__all__ = ['ReIDModel']
