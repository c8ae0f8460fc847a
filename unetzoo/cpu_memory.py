"""Keep freed CPU memory for reuse instead of handing it back to the OS after every call.

glibc's ``malloc`` serves every request of 32 MiB or more with a fresh ``mmap`` and returns it
to the operating system on ``free``. A U-Net at 512x512 allocates many such tensors per forward
pass (one 64-channel bfloat16 map at full resolution is exactly 32 MiB; a training batch of 8 at
256x256 is 64 MiB), so every call page-faults all of them in again and the kernel zero-fills
each page (``benchmarks/bench_fast_path.py`` times cloning a 32 MiB tensor, which allocates,
against copying into an existing one). :func:`tune_cpu_allocator` tells glibc to serve large blocks
from its heap as well and to keep freed memory there (``mallopt(M_MMAP_MAX, 0)`` and a high
``M_TRIM_THRESHOLD``), so the next call reuses the same pages. It is what PyTorch's CPU
performance guide gets by preloading jemalloc or tcmalloc, without a preload.

``python benchmarks/bench_fast_path.py`` measures both settings side by side, each in its own
process (``benchmarks/results/fast_path.md``, table 4). The price: the process keeps the memory of its
largest step mapped after the step ends (its RSS does not fall back), which is what a process
that runs that step again needs anyway.

The setting is process-wide. unetzoo applies it where it owns the work on a CPU: the
inference fast path (:func:`unetzoo.fast.optimize_for_inference`), the trainer and the
benchmark harness (for every network alike, smp's included). ``UNETZOO_CPU_ALLOCATOR=default``
in the environment turns the automatic use off everywhere; the explicit call still works.
Outside glibc (macOS, Windows, musl) nothing is changed and the functions return ``False``.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

__all__ = ["auto_tune_cpu_allocator", "cpu_allocator_tuned", "release_free_memory", "tune_cpu_allocator"]

ENV_VAR = "UNETZOO_CPU_ALLOCATOR"
# mallopt parameters (malloc.h). glibc adjusts its mmap and trim thresholds as a program runs
# (from 128 KiB up to 32 MiB, trim at twice that) until any of these is set; it cannot be
# switched back on, so tune_cpu_allocator(False) sets the values the adjustment settles at
# for large blocks
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_SETTLED_MMAP_THRESHOLD = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
_SETTLED_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 2 * _SETTLED_MMAP_THRESHOLD, 65536
_KEEP_UP_TO = 0x7FFFFFFF  # bytes of free heap top kept before trimming: the largest int mallopt takes

_lock = threading.Lock()
_tuned = False


def _glibc(function: str):
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return getattr(ctypes.CDLL(None), function)
    except (OSError, AttributeError):
        return None


def _mallopt():
    return _glibc("mallopt")


def tune_cpu_allocator(enable: bool = True) -> bool:
    """Keep freed CPU memory for reuse (``enable=True``), or go back to glibc's behaviour.

    glibc's own thresholds adapt while a program runs, and once set they cannot adapt again:
    ``enable=False`` sets the values they settle at for large blocks (blocks of 32 MiB or more
    mapped on their own and returned on ``free``; free heap top above 64 MiB trimmed). For
    glibc's untouched defaults, start a fresh process with ``UNETZOO_CPU_ALLOCATOR=default``.

    Returns:
        Whether the tuned setting is in effect after the call; ``False`` where the C library is
        not glibc (nothing is changed there).

    Example:
        >>> import unetzoo.cpu_memory as cpu_memory
        >>> cpu_memory.tune_cpu_allocator()   # then run the model as usual
        True
    """
    global _tuned
    mallopt = _mallopt()
    if mallopt is None:
        return False
    with _lock:
        mmap_max, trim = (0, _KEEP_UP_TO) if enable else (_DEFAULT_MMAP_MAX, _SETTLED_TRIM_THRESHOLD)
        settled = enable or mallopt(_M_MMAP_THRESHOLD, _SETTLED_MMAP_THRESHOLD)
        if not (settled and mallopt(_M_MMAP_MAX, mmap_max) and mallopt(_M_TRIM_THRESHOLD, trim)):
            raise OSError(f"mallopt refused M_MMAP_MAX={mmap_max} / M_TRIM_THRESHOLD={trim}")
        _tuned = enable
    return enable


def cpu_allocator_tuned() -> bool:
    """Whether :func:`tune_cpu_allocator` is in effect in this process."""
    return _tuned


def auto_tune_cpu_allocator() -> bool:
    """:func:`tune_cpu_allocator` unless ``UNETZOO_CPU_ALLOCATOR=default`` is set; what unetzoo
    calls for CPU work it runs. Returns whether the tuned setting is in effect."""
    setting = os.environ.get(ENV_VAR, "tuned").strip().lower()
    if setting not in ("tuned", "default"):
        raise ValueError(f"{ENV_VAR}={setting!r} is not understood; use 'tuned' (the default) or 'default'")
    if setting == "default":
        return _tuned
    return _tuned or tune_cpu_allocator(True)


def release_free_memory() -> bool:
    """Hand the memory the C heap holds free back to the operating system (``malloc_trim(0)``).

    With the tuned setting, memory freed by earlier work stays in the process (its RSS does not
    fall) and is reused by the next allocations; measure RSS growth after this call, or a
    process that happened to free a lot before (smp's VGG encoder builds and drops a 411 MB
    classifier) looks as if it needed less. Returns whether the C library is glibc (elsewhere
    nothing is done).
    """
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True
