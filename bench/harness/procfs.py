"""Reading /proc: the processes of a tree, their RSS and CPU time, and the machine's busy time.
RssSampler polls the servers' process trees for the peak memory figures of the report."""

from __future__ import annotations

import contextlib
import os
import resource
import threading


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """/proc/PID/stat from field 3 (state) on, or None for a process that is gone.  The
    command name (field 2) is skipped whole: it may hold spaces and parentheses."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat_fields(entry.name)) is not None:
            kids.setdefault(int(fields[1]), []).append(int(entry.name))
    return kids


def tree_pids(root: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    if kids is None:
        kids = _children_map()
    out: list[int] = []
    todo = [root]
    while todo and len(out) < 10_000:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _status_kib(pid: int) -> dict[str, int]:
    vals: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    vals[key] = int(value.split()[0])
    except OSError:
        pass
    return vals


def tree_memory_kib(root: int) -> tuple[int, int, int]:
    """RSS, PSS (shared pages split between the processes) and process count of a tree."""
    pids = tree_pids(root)
    rss = sum(_status_kib(pid).get("VmRSS", 0) for pid in pids)
    return rss, sum(_pss_kib(pid) for pid in pids), len(pids)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of every live process in the tree, plus reaped children of the root."""
    total = 0
    for pid in tree_pids(root):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # fields[0] is field 3 (state); utime/stime are fields 14/15, cutime/cstime 16/17
        total += int(fields[11]) + int(fields[12])
        if pid == root:
            total += int(fields[13]) + int(fields[14])
    return total / CLK_TCK


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def system_busy_seconds() -> float:
    """Busy CPU time of the whole machine (all cores, steal included), from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = vals
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu_seconds() -> float:
    """CPU time of this process and its reaped children (curl, wrk, openssl)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime



class RssSampler(threading.Thread):
    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.roots: dict[str, int] = {}
        self.phase = "startup"
        self.peak_tree_kib: dict[str, int] = {}
        self.peak_phase_kib: dict[tuple[str, str], int] = {}
        self.hwm_kib: dict[str, dict[int, int]] = {}
        self.max_procs: dict[str, int] = {}
        self.peak_pss_kib: dict[str, int] = {}
        self._n = 0
        self._stop_evt = threading.Event()
        self._lock = threading.Lock()

    def add(self, name: str, pid: int) -> None:
        with self._lock:
            self.roots[name] = pid

    def forget(self, name: str) -> None:
        """Stop sampling a tree (its server was stopped); its peaks are kept."""
        with self._lock:
            self.roots.pop(name, None)

    def sample(self) -> None:
        with self._lock:
            roots = dict(self.roots)
            phase = self.phase
        kids = _children_map()  # one /proc scan per sample for all servers
        self._n += 1
        with_pss = self._n % 5 == 1  # smaps_rollup walks page tables: sample it less often
        for name, root in roots.items():
            pids = tree_pids(root, kids)
            if with_pss:
                pss = sum(_pss_kib(pid) for pid in pids)
                self.peak_pss_kib[name] = max(self.peak_pss_kib.get(name, 0), pss)
            total = 0
            for pid in pids:
                vals = _status_kib(pid)
                total += vals.get("VmRSS", 0)
                hwm = self.hwm_kib.setdefault(name, {})
                hwm[pid] = max(hwm.get(pid, 0), vals.get("VmHWM", 0))
            self.peak_tree_kib[name] = max(self.peak_tree_kib.get(name, 0), total)
            key = (name, phase)
            self.peak_phase_kib[key] = max(self.peak_phase_kib.get(key, 0), total)
            self.max_procs[name] = max(self.max_procs.get(name, 0), len(pids))

    def set_phase(self, phase: str) -> None:
        self.sample()
        with self._lock:
            self.phase = phase

    def run(self) -> None:
        while not self._stop_evt.wait(self.interval):
            with contextlib.suppress(Exception):
                self.sample()

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=5)
        with contextlib.suppress(Exception):
            self.sample()

    def hwm_sum_kib(self, name: str) -> int:
        return sum(self.hwm_kib.get(name, {}).values())

