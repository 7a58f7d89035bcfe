"""The delay before trying again, shared by everything that retries: exponential, with jitter."""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]


def backoff_delay(attempt: int, *, first: float, maximum: float) -> float:
    """Seconds to wait before try `attempt + 1`: the delay doubles from `first` up to `maximum`.

    Half of it is fixed and the other half random, so that processes that failed together do not all
    come back at the same moment.
    """
    ceiling = min(maximum, first * 2.0 ** max(attempt - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not cryptography
