"""Keep glibc from unmapping and re-faulting large buffers between network layers.

CPU inference allocates and frees tens of megabytes per layer. With glibc's defaults each
such buffer is a fresh ``mmap`` that the kernel zero-fills page by page and ``munmap``s on
free, so on this project's SwinUNETR as much time went to page faults (system time) as to
arithmetic. While :func:`retained_heap` is active, large blocks come from the heap and freed
memory stays there for reuse; on exit the thresholds go back to glibc's dynamic maxima and the
free memory is returned to the OS with ``malloc_trim``. A no-op off glibc (macOS, Windows,
musl) and when ``LUNGTUMORSEG_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

OPT_OUT_ENV = "LUNGTUMORSEG_MALLOC_TUNING"

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
RETAIN_MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap
RETAIN_TRIM_THRESHOLD = 2**31 - 1  # ... and freed memory is kept (the largest int mallopt takes)
# glibc's own ceilings for its dynamic thresholds on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX and twice it)
RESTORE_MMAP_THRESHOLD = 32 << 20
RESTORE_TRIM_THRESHOLD = 64 << 20

_lock = threading.Lock()
_depth = 0


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") and hasattr(libc, "gnu_get_libc_version")):
        return None
    return libc


def tuning_enabled() -> bool:
    """False when the user opted out with ``LUNGTUMORSEG_MALLOC_TUNING=0``."""
    return os.environ.get(OPT_OUT_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@contextmanager
def retained_heap() -> Iterator[bool]:
    """Serve large CPU buffers from a retained heap inside the block; yields whether it is active.

    Re-entrant: only the outermost block changes and restores the settings.
    """
    global _depth
    libc = _glibc() if tuning_enabled() else None
    if libc is None:
        yield False
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            libc.mallopt(M_MMAP_THRESHOLD, RETAIN_MMAP_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, RETAIN_TRIM_THRESHOLD)
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(M_MMAP_THRESHOLD, RESTORE_MMAP_THRESHOLD)
                libc.mallopt(M_TRIM_THRESHOLD, RESTORE_TRIM_THRESHOLD)
                libc.malloc_trim(0)
