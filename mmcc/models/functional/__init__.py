"""Plain tensor functions behind the registered model components."""
from .momentum_update import momentum_update

__all__ = ['momentum_update']
