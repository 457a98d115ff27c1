"""glibc's allocator thresholds for training on a Linux CPU, set by ``genzoo run`` at start-up.

By default glibc serves every block above its mmap threshold (128 KiB at first, raised up to
32 MiB as large blocks are freed) with a fresh ``mmap``, and hands free memory at the top of the
heap back to the kernel once more than twice that threshold is free (``M_TRIM_THRESHOLD``). A
training step allocates and frees the same large activation tensors at every step, so their
pages go back to the kernel and are faulted in again, page by page, at the next step: 12,000 to
55,000 minor page faults per NVAE cell step, and 1.4 to 1.5x the cell's time
(``benchmarks/cells/page_faults.py``). :func:`configure` keeps them: blocks up to 32 MiB (the largest
threshold glibc accepts) come from the heap, and the heap is not trimmed below 2 GiB of free
space. The figures are the same; the process keeps the memory of its largest step in its heap
(its resident set after a step stays near its peak, where glibc's defaults let it fall back),
and gives it back when a run ends (the trainer's ``malloc_trim`` before each run's peak-memory
figure) or when it exits.

``GENZOO_MALLOC_TUNING=0`` leaves glibc's defaults; so do ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` in the environment (the user's own settings win). Elsewhere than on
Linux with glibc nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV_SWITCH = "GENZOO_MALLOC_TUNING"
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit systems
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB


def enabled() -> bool:
    """Whether :func:`configure` may change the allocator (``GENZOO_MALLOC_TUNING`` is not ``0``
    and the user has not set glibc's own ``MALLOC_*_`` variables)."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "off", "no"):
        return False
    return not any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))


def configure() -> dict[str, int]:
    """Set glibc's mmap and trim thresholds for training (see the module docstring); returns
    what was set, ``{}`` where nothing was (turned off, not Linux, not glibc)."""
    if not (sys.platform.startswith("linux") and enabled()):
        return {}
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries
        return {}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = {}
    for name, param, value in (
        ("M_MMAP_THRESHOLD", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    ):
        if mallopt(param, value) == 1:
            done[name] = value
    return done
