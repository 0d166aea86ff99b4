"""Hand the C heap's freed pages back to the operating system between phases (glibc's malloc_trim).

glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, after which the
2-6 MB activation tensors of a forward and backward come from its heap, whose freed pages it keeps: a
phase that follows (the grid engine's decoding after a stack's adaptation) then puts its own peak on
top of the last one's. One `malloc_trim(0)` between phases returns them (0.45 GB of the statistics
stack's 4.1 GB peak, BENCHMARKS.md); where the C library is not glibc it does nothing.

The collection before it scans every object the process tracks: with torch and transformers imported,
0.1-0.3 s each time, and the grid engine collects before each batch phase. A process that runs stages
therefore settles between them (`release_freed(settle=True)`, when no model is alive): what is still
alive then (modules, the run's records) is moved out of the collector's sight for good (`gc.freeze`),
and the collections after scan only what was made since.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def release_freed(settle: bool = False) -> bool:
    """Free what only reference cycles still hold (a finished stage's model and its hooks), then
    return the heap's free pages to the OS; False where the second cannot be done here. `settle`:
    between stages, when nothing of a stage is alive: later collections skip what is alive now."""
    gc.collect()
    if settle:
        gc.freeze()
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
