from .random_erasing import NormalizedRandomErasing

__all__ = ['NormalizedRandomErasing']
