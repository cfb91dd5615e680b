from .checkpoint_safe_globals import (checkpoint_safe_globals,
                                      register_checkpoint_safe_globals)
from .device import cpu_has_native_bf16
from .dist_env import default_backend, setup_distributed
from .sample_index import sample_index
from .setup_env import register_all_modules

__all__ = [
    'register_all_modules', 'register_checkpoint_safe_globals',
    'checkpoint_safe_globals', 'cpu_has_native_bf16', 'default_backend',
    'setup_distributed', 'sample_index'
]
