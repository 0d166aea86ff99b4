"""metasft.heap: freed heap pages go back to the OS (glibc), measured on the process's own RSS."""
from __future__ import annotations

import ctypes
import ctypes.util

import pytest
import torch

from metasft.heap import release_freed


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) * 1024


def glibc() -> bool:
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").gnu_get_libc_version
        return True
    except (OSError, AttributeError):
        return False


def _freed_blocks_leave_the_rss() -> None:
    torch.empty(8 * 2 ** 20, dtype=torch.uint8).fill_(1)    # freed at once: raises the mmap threshold to 8 MB
    big, small = [], []
    for _ in range(150):
        big.append(torch.ones(3 * 2 ** 20, dtype=torch.uint8))
        small.append(torch.ones(2 ** 16, dtype=torch.uint8))   # live, between the big blocks (64 KB: no
                                                               # hole an import left in the heap holds one)
    del big
    before = rss_bytes()
    assert release_freed()
    after = rss_bytes()
    assert before - after > 200 * 2 ** 20, (before, after)   # most of the 450 MB freed
    assert sum(int(t.sum()) for t in small) == 150 * 2 ** 16  # the live tensors are untouched


@pytest.mark.skipif(not glibc(), reason="malloc_trim is glibc's")
def test_freed_activation_sized_blocks_leave_the_rss_after_release():
    """What the grid engine meets: after a large block is freed, glibc serves 3 MB tensors from its heap;
    with small live tensors between them, freeing them leaves their pages resident until released.
    In a fresh process: the heap a worker's earlier tests left (its mmap threshold, its free blocks)
    would decide where the blocks go."""
    import multiprocessing

    process = multiprocessing.get_context("spawn").Process(target=_freed_blocks_leave_the_rss)
    process.start()
    process.join(120)
    assert process.exitcode == 0


def _settled_collections_skip_what_was_alive() -> None:
    import gc
    import weakref

    class Node:
        pass

    kept = [Node() for _ in range(200_000)]                   # alive at the settle: never scanned again
    cycle = Node()
    cycle.self = cycle
    gone = weakref.ref(cycle)
    del cycle                                                  # garbage in a cycle: freed by the settle
    release_freed(settle=True)
    assert gone() is None
    assert gc.get_freeze_count() >= len(kept)
    later = Node()
    later.self = later
    later_gone = weakref.ref(later)
    del later
    assert gc.collect() >= 1 and later_gone() is None          # what is made after is still collected
    assert len(gc.get_objects()) < len(kept)                   # the scan holds only what came after


def test_settle_collects_the_garbage_then_freezes_the_living():
    """`release_freed(settle=True)` between stages: the cycles freed then are collected, the objects
    alive then leave the collector's scan (gc.freeze), garbage made later is still collected. In a
    fresh process: freezing a test worker's objects would keep its later garbage."""
    import multiprocessing

    process = multiprocessing.get_context("spawn").Process(target=_settled_collections_skip_what_was_alive)
    process.start()
    process.join(120)
    assert process.exitcode == 0
