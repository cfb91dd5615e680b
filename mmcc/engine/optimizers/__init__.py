from .cpu_autocast_optim_wrapper import (CPUAutocastOptimWrapper,
                                         amp_optim_wrapper)

__all__ = ['CPUAutocastOptimWrapper', 'amp_optim_wrapper']
