"""A serving process's private memory: freed memory goes back to the operating system.

Each worker of `candidates serve --workers N` is a process of its own, so whatever one keeps
after loading a model, every worker keeps (the target: one more worker adds <= 150 MB, benchmarks/serving.py).
Two allocators hold on to freed memory: Arrow's default pool (mimalloc) keeps ~35 MB after a
Parquet snapshot of user histories is read, and glibc's malloc keeps what a model load freed in
the arena of the thread that loaded it (loads run on the reload thread): ~30-50 MB at 10^6
articles that `malloc_trim` did not return (measured). So a serving process reads Parquet through
the system allocator, a worker of `serve --workers N` uses one malloc arena with a fixed mmap
threshold (`configure`, before it starts threads; its threads allocate little outside the GIL),
and after each model load or build of shared arrays what is free goes back
(`release_free_memory`). Measured in benchmarks/serving.py (`memory_by_process`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import sys

LOG = logging.getLogger(__name__)


M_ARENA_MAX = -8  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20  # fixed: glibc would raise it after each large free, keeping large temporaries


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def configure(worker: bool = True) -> None:
    """Arrow allocates from the system allocator in this process, and with `worker` (a worker of
    `serve --workers N`: call before it starts threads) malloc uses one arena and a fixed mmap
    threshold, so freed memory can go back to the operating system. Without `worker` (one
    process, tests) malloc keeps its defaults."""
    import pyarrow

    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    if not worker:
        return
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = _libc()
        if not (libc.mallopt(M_ARENA_MAX, 1) and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
            LOG.debug("mallopt refused")


def release_free_memory() -> None:
    """Returns memory freed by Arrow and malloc to the operating system (best effort)."""
    if "pyarrow" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["pyarrow"].default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError, TypeError):
        _libc().malloc_trim(0)
