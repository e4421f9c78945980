"""CPU time of processes, read from ``/proc`` (Linux; psutil is not a dependency).

``utime + stime`` of a process covers all its threads. The benchmark samples these at the
edges of each measured window and divides the difference by the sagas completed in it.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

__all__ = [
    "CpuSampler",
    "cpu_seconds",
    "find_broker_pid",
    "machine_busy_seconds",
    "own_cpu_seconds",
    "rss_mib",
    "tree_pids",
]

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (which may hold spaces)."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all threads); None if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # After the name: state(0) ppid(1) ... utime(11) stime(12), i.e. stat fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (0 if it is gone)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def own_cpu_seconds() -> float:
    """CPU seconds of this process (the benchmark driver)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have spent (all CPUs, idle excluded)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def find_broker_pid() -> int | None:
    """The local RabbitMQ node (``beam.smp`` running ``rabbit``), if there is one."""
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm != "beam.smp":
                continue
            if b"rabbit" in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except OSError:
            continue
    return None


class CpuSampler:
    """Named groups of processes whose CPU seconds are read together."""

    def __init__(self) -> None:
        self.groups: dict[str, list[int]] = {}

    def add(self, name: str, pids: list[int]) -> None:
        """Track ``pids`` under ``name`` (their CPU is summed)."""
        self.groups[name] = list(pids)

    def sample(self) -> dict[str, float]:
        """CPU seconds per group now (processes that are gone count as zero);
        ``driver`` is this process, ``machine`` everything on the machine."""
        result = {
            name: sum(cpu_seconds(pid) or 0.0 for pid in pids) for name, pids in self.groups.items()
        }
        result["driver"] = own_cpu_seconds()
        result["machine"] = machine_busy_seconds()
        return result

    def rss(self) -> dict[str, float]:
        """Resident memory (MiB) per group now (the broker's included)."""
        return {name: sum(rss_mib(pid) for pid in pids) for name, pids in self.groups.items()}
