"""Idle CPU of the whole system (services and embedded store), whatever its history.

    uv run python -m orchestrator.dev.bench.idle --history 5000 --seconds 30

Starts the embedded store (or uses MONGODB_URL) and every service of the deployment as
processes, exactly as deployed (no probe), on a fresh namespace and database; runs a
few sagas, seeds ``--history`` finished sagas (as ``saga bench --history`` does), waits
for the system to settle, then reads ``/proc/<pid>/stat`` of every process at the edges
of an idle window: CPU seconds used divided by the window is the CPU each uses (1.0 is
one core busy). Prints them with each service's resident memory, and removes
everything it created. A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from orchestrator.dev.bench.cpu import cpu_seconds, rss_mib
from orchestrator.dev.bench.history import capture_templates, run_templates, seed_history
from orchestrator.dev.bench.system import BenchSystem
from orchestrator.dev.bench.workloads import resolve
from orchestrator.dev.processes import services_of
from orchestrator.settings import Settings

__all__ = ["IdleReport", "main", "measure_idle", "rss_mib"]


@dataclass(frozen=True, kw_only=True)
class IdleReport:
    """CPU (cores) and RSS (MiB) per process over the idle window."""

    seconds: float
    history: int
    cpu: dict[str, float]
    rss: dict[str, float]

    @property
    def total(self) -> float:
        """The whole system's CPU while idle."""
        return sum(self.cpu.values())

    def lines(self) -> list[str]:
        """A small table."""
        out = [f"idle for {self.seconds:g} s with {self.history} finished sagas stored"]
        for name in sorted(self.cpu):
            out.append(f"  {name:<14} {self.cpu[name]:.4f} CPU   {self.rss.get(name, 0):6.1f} MiB")
        out.append(f"  {'total':<14} {self.total:.4f} CPU")
        return out


async def measure_idle(
    settings: Settings, *, history: int, seconds: float, settle: float, work_dir: Path
) -> IdleReport:
    """Start, seed, settle, measure, clean up."""
    tag = uuid.uuid4().hex[:8]
    settings = settings.with_(namespace=f"idle-{tag}", database=f"idle_{tag}", log_format="json")
    workload = resolve(settings).workload
    names = tuple(n for n in services_of(settings) if n != "api")
    system = BenchSystem(
        settings, work_dir=work_dir, log_dir=work_dir / "logs", services=names, probe=False
    )
    try:
        await system.start(workload)
        await system.prepare(workload)
        await workload.reserve(3, 1.0)
        ids = await run_templates(system.settings, workload.start, read_side="readside" in names)
        if history:
            await seed_history(system.db, await capture_templates(system.db, ids), history)
        await asyncio.sleep(settle)
        pids = {name: pid for name, group in system.pids().items() for pid in group}
        before = {name: cpu_seconds(pid) or 0.0 for name, pid in pids.items()}
        await asyncio.sleep(seconds)
        after = {name: cpu_seconds(pid) or 0.0 for name, pid in pids.items()}
        return IdleReport(
            seconds=seconds,
            history=history,
            cpu={n: (after[n] - before[n]) / seconds for n in pids},
            rss={n: rss_mib(pid) for n, pid in pids.items()},
        )
    finally:
        await system.cleanup()


def main() -> None:
    """Entry point: ``python -m orchestrator.dev.bench.idle``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=0, help="finished sagas to seed first")
    parser.add_argument("--seconds", type=float, default=30.0, help="idle window measured")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before measuring")
    args = parser.parse_args()
    settings = Settings.from_env().with_(mongodb_url=os.environ.get("MONGODB_URL") or None)
    with tempfile.TemporaryDirectory(prefix="saga-idle-") as tmp:
        report = asyncio.run(
            measure_idle(
                settings,
                history=args.history,
                seconds=args.seconds,
                settle=args.settle,
                work_dir=Path(tmp),
            )
        )
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
