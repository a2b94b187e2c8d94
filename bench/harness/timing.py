"""Timing a measurement and accounting for the CPU that other processes used meanwhile.

The CPU that everything but the servers under test and this harness (with its curl, wrk and
openssl children) used during a measurement is its "other load".  A result taken under more
than --max-other-load cores is thrown away and measured again (bounded in count and time)."""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.common import BenchError, log
from harness.procfs import RssSampler, own_cpu_seconds, system_busy_seconds, tree_cpu_seconds


def wait_for_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Wait (at most max_wait s) until the machine's CPU use over 2 s is below threshold
    cores; return the last measured load in cores."""
    deadline = time.monotonic() + max_wait
    said = False
    while True:
        b0, t0 = system_busy_seconds(), time.monotonic()
        time.sleep(min(2.0, max(0.5, deadline - t0)))
        busy = (system_busy_seconds() - b0) / (time.monotonic() - t0)
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        if not said:
            log(f"machine busy ({busy:.2f} cores in use); waiting up to {max_wait:.0f}s")
            said = True


def settle() -> None:
    """Flush dirty pages so one server's writeback doesn't land in the next measurement."""
    os.sync()
    time.sleep(0.5)


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


@dataclass
class Window:
    """What the machine did while one measurement ran."""

    wall: float
    other_cpu: float  # CPU seconds used by other processes (never below 0)
    cpu: dict[str, float]  # CPU seconds per measured process tree

    @property
    def other(self) -> float:
        """Other load in cores, averaged over the window."""
        return self.other_cpu / self.wall if self.wall > 0 else 0.0


@dataclass
class NoiseGuard:
    """Runs measurements under the quiet-machine rules of the run's options
    (--max-other-load, --noisy-retries, --retry-budget, --deadline)."""

    args: argparse.Namespace
    sampler: RssSampler
    deadline: float  # time.monotonic() after which the run is aborted
    tick_slack: float = 0.0  # CPU seconds of other load forgiven per measurement
    discarded: int = 0  # results thrown away because of other load
    retry_spent: dict[str, float] = field(default_factory=dict)  # kind -> seconds lost

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise BenchError(f"run deadline of {self.args.deadline}s exceeded")

    def metered(self, phase: str, pids: dict[str, int], fn: Callable[[], Any]
                ) -> tuple[Any, Window]:
        """fn() with the sampler in `phase`; the CPU of each tree in `pids` and of the rest."""
        c0 = {n: tree_cpu_seconds(p) for n, p in pids.items()}
        t0, sys0, own0 = time.monotonic(), system_busy_seconds(), own_cpu_seconds()
        self.sampler.set_phase(phase)
        try:
            value = fn()
        finally:
            self.sampler.set_phase("idle")
        wall = time.monotonic() - t0
        # a tree that is gone reads as 0 s: count it as having used nothing
        cpu = {n: max(tree_cpu_seconds(p) - c0[n], 0.0) for n, p in pids.items()}
        # CPU used by anything but these trees and this harness: other work on the machine,
        # the kernel's writeback, hypervisor steal
        other = system_busy_seconds() - sys0 - (own_cpu_seconds() - own0) - sum(cpu.values())
        return value, Window(wall, max(other - self.tick_slack, 0.0), cpu)

    def measure(
        self,
        kind: str,
        phase: str,
        pids: Callable[[], dict[str, int]],
        prepare: Callable[[int], Any],
        run: Callable[[Any], Any],
        timed: bool = True,
        label: str | None = None,
    ) -> tuple[Any, Window, bool]:
        """prepare(attempt) (untimed: push a fresh blob, say), settle, then run(prepared)
        metered.  A timed result taken while other processes used more than --max-other-load
        cores is thrown away and measured again, up to --noisy-retries times and while this
        kind of measurement has lost less than --retry-budget seconds; after that it is kept
        and returned as noisy.  `label` names the measurement in the log (default: phase)."""
        args = self.args
        for attempt in range(args.noisy_retries + 1):
            self.check_deadline()
            prepared = prepare(attempt)
            settle()
            t0 = time.monotonic()
            value, win = self.metered(phase, pids(), functools.partial(run, prepared))
            noisy = timed and win.other > args.max_other_load
            budget_left = args.retry_budget - self.retry_spent.get(kind, 0.0)
            if noisy and attempt < args.noisy_retries and budget_left > 0:
                log(f"{label or phase}: other processes used {win.other:.2f} cores; "
                    "discarding this result and measuring again")
                self.discarded += 1
                wait_for_quiet(min(20.0, budget_left), args.max_other_load)
                self.retry_spent[kind] = self.retry_spent.get(kind, 0.0) + time.monotonic() - t0
                continue
            return value, win, noisy
        raise AssertionError("unreachable")
