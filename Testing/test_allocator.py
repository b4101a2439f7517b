"""The retained heap (allocator.py): fewer page faults inside, memory handed back on exit."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from LungTumorSegLib.core.allocator import OPT_OUT_ENV, retained_heap

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc tuning"
)
BLOCK = 16 * 1024 * 1024  # float32 elements: a 64 MiB buffer, far above glibc's default mmap threshold
BLOCK_PAGES = BLOCK * 4 // resource.getpagesize()
REPEATS = 8


def page_faults_for_repeated_buffers(repeats: int = REPEATS) -> int:
    """Minor page faults while allocating, touching and freeing the same large buffer repeatedly."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        buffer = torch.ones(BLOCK)
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def resident_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


@glibc_only
def test_large_buffers_are_reused_instead_of_re_faulted():
    default_faults = page_faults_for_repeated_buffers()
    with retained_heap() as active:
        assert active
        retained_faults = page_faults_for_repeated_buffers()
    # with glibc's defaults every buffer is fresh pages; retained, a small allocation landing in the
    # freed block can push one buffer to new pages now and then, but most are reused
    assert default_faults >= 0.9 * REPEATS * BLOCK_PAGES
    assert retained_faults <= REPEATS * BLOCK_PAGES / 2


@glibc_only
def test_memory_is_handed_back_when_the_block_ends():
    start = resident_mb()
    with retained_heap():
        buffers = [torch.ones(BLOCK) for _ in range(4)]  # 256 MiB
        del buffers
        assert resident_mb() - start > 200  # kept for reuse while inside
    assert resident_mb() - start < 64


@glibc_only
def test_nested_blocks_restore_only_at_the_outermost_exit():
    with retained_heap() as outer:
        with retained_heap() as inner:
            assert outer and inner
        # still retained after the inner block
        assert page_faults_for_repeated_buffers() <= REPEATS * BLOCK_PAGES / 2


def test_the_user_can_opt_out(monkeypatch):
    monkeypatch.setenv(OPT_OUT_ENV, "0")
    with retained_heap() as active:
        assert not active
