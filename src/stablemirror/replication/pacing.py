"""Retry backoff and a bandwidth limit shared by every stream of one copy."""

from __future__ import annotations

import asyncio
import random
import time


def backoff(attempt: int, first: float, cap: float) -> float:
    """Seconds before retry number `attempt` (1-based): doubling, jittered over its upper
    half so parallel streams cut together do not retry together."""
    delay = min(cap, first * 2.0 ** (attempt - 1))
    return float(delay / 2 + random.random() * delay / 2)


class RateLimit:
    """A token bucket of `rate` bytes/second (one second of burst); 0 is unlimited."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._tokens = float(rate)
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        if self.rate <= 0 or n <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= n
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self.rate)
