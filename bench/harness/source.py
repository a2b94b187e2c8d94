"""Which stablemirror source the servers run (mirror.py's --code), and a line saying so."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from harness.common import REPO_ROOT, BenchError


def git(*argv: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(REPO_ROOT), *argv], capture_output=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout.decode(errors="replace") if proc.returncode == 0 else ""


def snapshot_code(mode: str, work: Path) -> tuple[Path | None, str]:
    """The stablemirror source the servers will run, and a line saying what it is."""
    head = git("rev-parse", "--short", "HEAD").strip() or "?"
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()]
    diff_id = hashlib.sha256(git("diff", "HEAD", "--", "src").encode()).hexdigest()[:12]
    changes = (f"plus uncommitted changes to {len(dirty)} path(s) under src/ "
               f"({', '.join(x.removeprefix('src/stablemirror/') for x in dirty[:8])}"
               f"{', ...' if len(dirty) > 8 else ''}; `git diff HEAD -- src` sha256 "
               f"{diff_id})" if dirty else "(src/ clean)")
    if mode == "live":
        return None, f"`src/` as found on disk when each server started: git {head} {changes}"
    dest = work / "code"
    if mode == "HEAD":
        dest.mkdir()
        with subprocess.Popen(["git", "-C", str(REPO_ROOT), "archive", "HEAD", "src"],
                              stdout=subprocess.PIPE) as arch:
            subprocess.run(["tar", "-x", "-C", str(dest)], stdin=arch.stdout, check=True,
                           timeout=120)
        if arch.wait(timeout=60) != 0:
            raise BenchError("git archive HEAD src failed")
        return dest / "src", f"git {head}, committed `src/` (git archive HEAD)"
    shutil.copytree(REPO_ROOT / "src", dest / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest / "src", f"git {head} {changes}, copied at the start of the run"
