"""Giving freed memory back to the system after large requests.

glibc's allocator keeps what Python and native libraries free (a decoded image, a parsed 30 MB
body, the tokenizer's buffers) in its arenas, one per thread that allocated, so the process stays
at its peak long after the request. `trim_when_grown` watches the resident size and, while it is
MEMORY_TRIM_GROWTH_BYTES above the lowest seen, asks glibc to return free pages (`malloc_trim`).
On a C library without it (musl), nothing happens.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable
from typing import cast

log = logging.getLogger("passerelle.memory")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_SETTLED = 1 << 20


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return cast(Callable[[int], int], trim)


_TRIM = _malloc_trim()


def resident_bytes() -> int:
    """This process's resident set size, from /proc (cheap: one small read)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


def trim() -> None:
    if _TRIM is not None:
        _TRIM(0)


async def trim_when_grown(growth_bytes: int, interval_s: float) -> None:
    """Trim whenever the resident size is `growth_bytes` above the lowest seen, unless nothing changed
    since the last trim (memory that is really in use is not trimmed again and again)."""
    if _TRIM is None:
        log.info("this C library has no malloc_trim: freed memory stays with the allocator")
        return
    lowest, trimmed_at = resident_bytes(), -1
    while True:
        await asyncio.sleep(interval_s)
        current = resident_bytes()
        lowest = min(lowest, current)
        if current - lowest < growth_bytes or abs(current - trimmed_at) < _SETTLED:
            continue
        await asyncio.to_thread(trim)
        trimmed_at = resident_bytes()
        log.debug("trimmed the allocator: resident %.0f MiB -> %.0f MiB", current / 2**20, trimmed_at / 2**20)
