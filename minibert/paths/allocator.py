"""Freed memory kept in the process, so that the next batch does not fault its pages in again (glibc only).

PyTorch's CPU tensors come from the C library's ``malloc``. An encode allocates and frees the same few
tensors of a few MB for every batch and every layer (a batch's activations, the int8 path's quantized
copies). glibc serves blocks above its mmap threshold from fresh ``mmap``s and gives free space at the top
of its heap above its trim threshold back to the operating system; both start at 128 KiB and adapt
upwards, but an encode loop keeps crossing them, and the next batch's tensors land on pages the kernel must
map and zero again, one fault per 4 KiB page: time outside every operator.

``keep_freed_memory`` fixes both, as the allocators that PyTorch's CPU tuning guide suggests preloading
(jemalloc, tcmalloc) behave by themselves: blocks up to 256 MiB come from the heap (32 MiB before glibc
2.35, the most it accepts there), and the heap keeps up to 1 GiB of freed memory for the next batch. The
price is that the process stays at its peak size instead of shrinking after it. It is a setting of the
whole process, so the library never makes it behind a program's back: the encoding commands of the command
line (encode, similarity, search, mine) and the benchmark scripts call it; a program calls it once itself.
Where the user has chosen already (``GLIBC_TUNABLES`` or ``MALLOC_*_`` variables naming either threshold,
or another allocator in ``LD_PRELOAD``), it changes nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc's malloc.h)
MMAP_THRESHOLDS = (256 * 2**20, 32 * 2**20)  # tried in turn: glibc before 2.35 refuses more than 32 MiB
TRIM_THRESHOLD = 2**30  # freed memory the heap keeps before it gives any back
USER_SETTINGS = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")  # in GLIBC_TUNABLES
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")  # glibc's older names for the same


def glibc_library() -> ctypes.CDLL | None:
    """The C library, where it is glibc (Linux, most distributions); None elsewhere (macOS, Windows, musl)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")  # glibc's name on every Linux PyTorch has wheels for
    except OSError:
        return None


def users_own_choice() -> str | None:
    """What the user set about malloc before the process started, or None."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    named = [s for s in USER_SETTINGS if s in tunables] + [v for v in USER_VARIABLES if v in os.environ]
    if named:
        return ", ".join(named)
    if "malloc" in os.environ.get("LD_PRELOAD", ""):  # jemalloc, tcmalloc, mimalloc: not glibc's malloc at all
        return "LD_PRELOAD=" + os.environ["LD_PRELOAD"]
    return None


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (see the module's docstring). True where this call set
    it now (or an earlier one did); False where the C library is not glibc or the user chose already
    (``users_own_choice``), and nothing changes."""
    libc = glibc_library()
    if libc is None or users_own_choice() is not None:
        return False
    # the mmap threshold first: setting either one turns off glibc's adaptation of both, and a trim threshold
    # alone would leave every block above 128 KiB to mmap, which faults far more than the defaults
    if not any(libc.mallopt(M_MMAP_THRESHOLD, threshold) for threshold in MMAP_THRESHOLDS):
        return False
    return bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
