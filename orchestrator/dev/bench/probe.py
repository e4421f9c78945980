"""Run a service's module with MongoDB command counting and, optionally, a profiler.

    python -m orchestrator.dev.bench.probe participants.inventory

The service runs unchanged (``runpy``, as ``python -m`` would run it); around it:

* ``SAGA_BENCH_COUNTS=<file>``: pymongo command monitoring counts every command the
  process sends, by name (``insert``, ``update``, ``find``, ...); the counts are written to
  the file every 0.2 s and at exit. One command is one round trip to the store.
* ``SAGA_BENCH_PROFILE=<prefix>``: from SIGUSR1 to SIGUSR2 (the benchmark sends them at
  the edges of its measured window), pyinstrument samples the main thread every
  millisecond; then it writes ``<prefix>.pyisession`` and a text call tree
  ``<prefix>.txt``.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from pymongo import monitoring

__all__ = ["CommandCounter", "main"]

COUNTS_ENV = "SAGA_BENCH_COUNTS"
PROFILE_ENV = "SAGA_BENCH_PROFILE"
WRITE_INTERVAL = 0.2


class CommandCounter(monitoring.CommandListener):
    """Counts the MongoDB commands this process starts, by command name."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """One more command sent."""
        self.counts[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Nothing to count."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to count (the command was counted when it started)."""

    def write(self, path: Path) -> None:
        """Replace ``path`` with the counts so far (atomically)."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(self.counts)))
        os.replace(tmp, path)


def _count_commands(path: Path) -> None:
    counter = CommandCounter()
    monitoring.register(counter)

    def keep_writing() -> None:
        while True:
            time.sleep(WRITE_INTERVAL)
            counter.write(path)

    threading.Thread(target=keep_writing, name="bench-counts", daemon=True).start()
    atexit.register(counter.write, path)


def _profile(prefix: str) -> None:
    """Profile between SIGUSR1 (the measured window begins) and SIGUSR2 (it ends), so
    start-up (imports, connections) and drains stay out of the profile."""
    from pyinstrument import Profiler  # noqa: PLC0415 - a dev dependency, only when asked

    # Wall clock: sampling by CPU time (a custom timer) made the services eight times
    # slower here, against three or four times.
    profiler = Profiler(interval=0.001, async_mode="disabled")

    def begin(*_: object) -> None:
        if not profiler.is_running:
            profiler.start()

    def finish(*_: object) -> None:
        if not profiler.is_running:
            return
        session = profiler.stop()
        session.save(f"{prefix}.pyisession")
        Path(f"{prefix}.txt").write_text(profiler.output_text(unicode=True, short_mode=False))

    signal.signal(signal.SIGUSR1, begin)
    signal.signal(signal.SIGUSR2, finish)
    atexit.register(finish)


def main() -> None:
    """Entry point: ``python -m orchestrator.dev.bench.probe <module>``."""
    if len(sys.argv) != 2:
        sys.exit("usage: python -m orchestrator.dev.bench.probe <service module>")
    module = sys.argv[1]
    if counts := os.environ.get(COUNTS_ENV):
        _count_commands(Path(counts))
    if prefix := os.environ.get(PROFILE_ENV):
        _profile(prefix)
    sys.argv = [module]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
