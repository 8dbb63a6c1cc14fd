"""CPU time and memory per process, from /proc (or psutil when it is installed).

``ProcessTree(pid)`` finds a process and its descendants (a server and any worker processes it
starts); ``snapshot()`` reads each one's CPU seconds (user + system) and RSS; the difference of
two snapshots over the wall time between them is each process's CPU share (100% = one core).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

try:
    import psutil  # type: ignore
except ImportError:  # not a dependency of the project: /proc does the same on Linux
    psutil = None

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    name: str  # a short command line
    cpu_seconds: float
    rss_bytes: int
    threads: int


def _read_proc(pid: int) -> ProcInfo | None:
    if psutil is not None:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                times = p.cpu_times()
                return ProcInfo(pid, p.ppid(), _short(p.cmdline()) or p.name(), times.user + times.system,
                                p.memory_info().rss, p.num_threads())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return None
    # the command name is in parentheses and may hold spaces: split after the last ')'
    head, _, rest = stat.rpartition(")")
    fields = rest.split()
    comm = head.partition("(")[2]
    ppid = int(fields[1])
    utime, stime = int(fields[11]), int(fields[12])
    threads = int(fields[17])
    rss_pages = int(fields[21])
    return ProcInfo(pid, ppid, _short(cmdline) or comm, (utime + stime) / _TICKS, rss_pages * _PAGE, threads)


def _short(cmdline: list[str]) -> str:
    if not cmdline:
        return ""
    words = [os.path.basename(cmdline[0])] + cmdline[1:]
    text = " ".join(words)
    return text if len(text) <= 80 else text[:77] + "..."


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    if psutil is not None:
        for p in psutil.process_iter(["pid", "ppid"]):
            children.setdefault(p.info["ppid"], []).append(p.info["pid"])
        return children
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                rest = f.read().decode(errors="replace").rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(rest[1]), []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


@dataclass(frozen=True)
class Snapshot:
    at: float
    procs: dict[int, ProcInfo]


class ProcessTree:
    """A root process and its descendants, found again at each snapshot (workers may come and go)."""

    def __init__(self, pid: int, label: str):
        self.pid = pid
        self.label = label

    def snapshot(self) -> Snapshot:
        procs = {}
        for pid in descendants(self.pid):
            info = _read_proc(pid)
            if info is not None:
                procs[pid] = info
        return Snapshot(time.monotonic(), procs)


def usage(before: Snapshot, after: Snapshot, label: str) -> list[dict]:
    """One row per process alive at ``after``: CPU % over the interval (100 = one core; a process
    born in between counts from 0), RSS and threads at ``after``."""
    wall = max(after.at - before.at, 1e-9)
    rows = []
    for pid, info in after.procs.items():
        start = before.procs.get(pid)
        cpu = info.cpu_seconds - (start.cpu_seconds if start is not None else 0.0)
        rows.append({
            "group": label, "pid": pid, "ppid": info.ppid, "name": info.name,
            "cpu_percent": round(100.0 * cpu / wall, 1), "rss_mb": round(info.rss_bytes / 2**20, 1),
            "threads": info.threads, "new": start is None,
        })
    return rows


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / _TICKS, total / _TICKS
