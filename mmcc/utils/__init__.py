from .checkpoint_safe_globals import (checkpoint_safe_globals,
                                      register_checkpoint_safe_globals,
                                      register_safe_checkpoint_loaders,
                                      safe_torch_load)
from .checks import check_features, check_finite, check_int, l2_normalised
from .device import cpu_has_native_bf16
from .dist_env import default_backend, setup_distributed
from .random_state import seeded_random_state
from .sample_index import sample_index
from .setup_env import register_all_modules

__all__ = [
    'register_all_modules', 'register_checkpoint_safe_globals',
    'checkpoint_safe_globals', 'register_safe_checkpoint_loaders',
    'safe_torch_load', 'cpu_has_native_bf16', 'default_backend',
    'setup_distributed', 'sample_index', 'seeded_random_state', 'check_finite',
    'check_features', 'check_int', 'l2_normalised'
]
