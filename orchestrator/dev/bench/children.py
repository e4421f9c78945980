"""Child processes of the benchmark: the services (under the probe) and the baseline roles.

They are :class:`~orchestrator.dev.processes.ServiceProcess` objects (same settings in the
environment, same log files, same readiness line, same stop) started with another command
line: ``python -m orchestrator.dev.bench.probe <service module>`` or ``python -m
orchestrator.dev.bench.baseline <role>``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from orchestrator.dev.processes import ServiceProcess

if TYPE_CHECKING:
    from pathlib import Path

    from orchestrator.settings import Settings

__all__ = ["BenchProcess", "start_all", "stop_all"]


class BenchProcess(ServiceProcess):
    """A service process run with ``python <argv...>`` and some extra environment."""

    def __init__(
        self,
        service: str,
        settings: Settings,
        *,
        log_dir: Path,
        argv: list[str],
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(service, settings, log_dir=log_dir)
        self.argv = argv
        self.extra_env = dict(env or {})

    def spawn(self) -> None:
        """Start the process (does not wait for it to be ready)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ) | self.settings.to_env() | self.extra_env
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, *self.argv],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


async def start_all(processes: Iterable[ServiceProcess], *, timeout: float = 60.0) -> None:
    """Spawn every process, then wait until each printed its ready line."""
    started = list(processes)
    for process in started:
        process.spawn()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for process in started:
        while not process.ready():
            if loop.time() > deadline:
                raise RuntimeError(
                    f"{process.service} not ready after {timeout}s; see {process.log}"
                )
            await asyncio.sleep(0.1)


async def stop_all(processes: Iterable[ServiceProcess]) -> None:
    """SIGTERM every process and wait for them to exit (in parallel)."""
    await asyncio.gather(*(asyncio.to_thread(p.stop) for p in processes))
