"""What benchmarks report about the machine: CPU extensions and memory.

Linux's ``/proc`` files; elsewhere the functions say "unknown" or return
-1 / False instead of failing, so a benchmark still runs.
"""

# The x86 extensions that decide the speed of matrix products here.
VECTOR_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16')


def cpu_vector_flags() -> str:
    """The CPU's model name and which of :data:`VECTOR_FLAGS` it reports,
    e.g. ``'AMD EPYC ...: avx2 avx512f avx512_bf16'``."""
    flags, model = None, ''
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name') and not model:
                    model = line.split(':', 1)[1].strip()
                elif line.startswith('flags') and flags is None:
                    flags = set(line.split(':', 1)[1].split())
    except OSError:
        pass
    if flags is None:
        return 'unknown CPU flags (no /proc/cpuinfo)'
    present = [flag for flag in VECTOR_FLAGS if flag in flags]
    named = ' '.join(present) or 'none of ' + '/'.join(VECTOR_FLAGS)
    return f'{model}: {named}' if model else named


def process_memory(field: str = 'VmRSS') -> int:
    """A size field of ``/proc/self/status`` in bytes: ``'VmRSS'`` (resident
    now) or ``'VmHWM'`` (its high-water mark); -1 if unavailable."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def reset_peak_memory() -> bool:
    """Reset ``VmHWM`` to the current resident size (write 5 to
    ``/proc/self/clear_refs``); False where the kernel refuses."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a process group's
    rendezvous; another process may still take it before it is used)."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]
