from .reid_visualizer import ReIDVisualizer

__all__ = ['ReIDVisualizer']
