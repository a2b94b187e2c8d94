"""Race tests across processes: start one process per argument tuple, each reporting one
result on a queue passed as its last argument, and collect the results (bounded waits)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from multiprocessing.context import BaseContext
from typing import Any


def race(target: Callable[..., None], args: Sequence[tuple[Any, ...]],
         ctx: BaseContext | None = None, timeout: float = 60.0) -> list[Any]:
    """`target(*a, queue)` in its own process for each `a` in `args`, all started before
    any result is read; the results in the order they arrived."""
    context: Any = ctx or multiprocessing
    out = context.Queue()
    procs = [context.Process(target=target, args=(*a, out)) for a in args]
    for p in procs:
        p.start()
    results = [out.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout=timeout)
    return results
