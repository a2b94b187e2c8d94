"""The PostgreSQL pool bounds of one process, on their own: the settings (config.py) name
them without importing SQLAlchemy (docs/footprint.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PoolSize:
    """PostgreSQL connections per process (settings `database.*`)."""

    size: int = 10
    max_overflow: int = 10
    timeout: float = 10.0

    @property
    def most(self) -> int:
        return self.size + self.max_overflow

    @property
    def hot(self) -> int:
        """Of `size`, the connections the pull path's reads use from the event loop
        (index/pg_reads.py); the engine's pool gets the rest and the overflow."""
        return self.size // 2
