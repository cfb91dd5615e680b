"""What this machine computes with: CUDA, and bfloat16 on the CPU."""
import torch


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX).

    Without either, torch emulates bfloat16 products: no faster than
    float32 for the kNN screen and several times slower than float32 under
    autocast (``docs/benchmarks.md``).
    """
    cpu = getattr(torch, 'cpu', None)
    checks = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
    try:
        return any(
            getattr(cpu, name)() for name in checks if hasattr(cpu, name))
    except Exception:  # private helpers: absent or failing means "no"
        return False
