"""Pausing Python's cyclic garbage collector while many containers are made at once."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector, if it runs, for the duration.

    Making many containers at once (the million modules of a DeepSeek-V3
    build, the tens of thousands of entries of a checkpoint's headers) makes
    the collector rescan the growing heap again and again, which can double
    the time taken. Those objects form no reference cycles, so nothing is
    left for it to collect.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


__all__ = ["gc_paused"]
