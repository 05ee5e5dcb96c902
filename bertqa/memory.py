"""Give freed heap memory back to the operating system (glibc), where that is possible.

glibc serves allocations below its mmap threshold from the heap, and raises that threshold
(up to 32 MiB) each time a larger block it had mapped is freed. Reading, converting and
quantizing one layer after another therefore leaves the freed fp32 blocks of each layer as
holes between the int8 blocks that stay: the process keeps the pages of the holes resident
(measured: a BERT-large prepare that needs 0.9 GB held 1.9 GB). malloc_trim(0) returns every
whole free page, at the top of the heap and inside it, to the system.
"""
from __future__ import annotations

import ctypes
import ctypes.util

_trim = None


def release_free_heap() -> bool:
    """malloc_trim(0) where the C library has it (glibc); False elsewhere, where it does nothing."""
    global _trim
    if _trim is None:
        try:
            _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
            _trim.argtypes, _trim.restype = [ctypes.c_size_t], ctypes.c_int
        except (OSError, AttributeError):
            _trim = False
    return bool(_trim and _trim(0))
