"""Retry delays of an endpoint's deliveries (pure)."""

from __future__ import annotations

import random
from collections.abc import Callable


def retry_delay(attempts: int, first: float, cap: float,
                jitter: Callable[[], float] = random.random) -> float:
    """After `attempts` failures: `first * 2^(attempts-1)`, capped at `cap`, spread over the
    upper half of that by `jitter` in [0, 1) (replicas failing together do not come back
    together). Never below half the first delay, never above the cap."""
    delay = min(cap, first * 2.0 ** max(0, attempts - 1))
    return delay / 2 + jitter() * delay / 2
