"""Plain tensor functions behind the registered model components."""
from .momentum_update import check_update_args, momentum_update

__all__ = ['momentum_update', 'check_update_args']
