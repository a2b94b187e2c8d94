"""supervisor.py: a stop signal sent to the parent while it forks its workers and exec()s
the supervisor is kept (blocked, not lost) and handled as soon as the supervisor runs."""

from __future__ import annotations

import subprocess
import sys

EARLY_SIGTERM = """
import os, signal, sys, time
from stablemirror.logs import configure_logging
from stablemirror.server.supervisor import STOP_SIGNALS, supervise

configure_logging("info", "text")
signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # as server/prefork.py does
children = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        time.sleep(20)
        os._exit(3)  # never asked to stop
    children.append(pid)
os.kill(os.getpid(), signal.SIGTERM)  # before any handler of the supervisor exists
sys.exit(supervise(children))
"""


def test_a_sigterm_before_the_supervisor_runs_stops_the_workers() -> None:
    done = subprocess.run([sys.executable, "-c", EARLY_SIGTERM], capture_output=True,
                          text=True, timeout=15, check=False)
    assert done.returncode == 0, done.stderr
    assert "shutting down: 2 worker(s)" in done.stderr
    assert "exited with status" not in done.stderr and "killed by" not in done.stderr


def test_resume_collector_freezes_start_up_and_turns_the_gc_back_on() -> None:
    import gc

    from stablemirror.server.prefork import resume_collector

    was = gc.isenabled()
    gc.disable()
    try:
        resume_collector()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()
