"""Pausing Python's cyclic garbage collector while one saved record is decoded."""

from __future__ import annotations

import contextlib
import gc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["collector_paused"]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector from running during the (synchronous) block.

    Decoding a large record makes a great many objects, none of them in a reference cycle. Each few hundred
    of them start a collector pass, and now and then a full one, which walks every object the program holds:
    for a state of a million entries, those passes cost several times the decoding itself. Nothing else runs
    on the event loop during the block, and the collector catches up after it as it always does (the objects
    made meanwhile are counted). A collector the program disabled stays disabled.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
