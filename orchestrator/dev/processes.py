"""Services as child processes: the development runner, the benchmark, the harness and
the tests start them the same way, with the same entry points the compose file uses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = ["SERVICES", "ServiceProcess", "services_of"]

SERVICES = {
    "orchestrator": "orchestrator",
    "readside": "orchestrator.readside",
    "api": "orchestrator.api",
}
"""The engine's services: name -> module run with ``python -m``. Packs add their
participants (:func:`services_of`)."""


def services_of(settings: Settings, *, core: bool = True) -> dict[str, str]:
    """Every service of a deployment: the engine's (unless ``core`` is False), then each
    registered pack's participants, in registration order."""
    found = dict(SERVICES) if core else {}
    for pack in settings.packs():
        for name, module in pack.services.items():
            found.setdefault(name, module)
    return found


class ServiceProcess:
    """One service in its own process, with its settings passed in the environment and
    its log in ``log_dir/<service>[-<instance>].log``."""

    def __init__(
        self, service: str, settings: Settings, *, log_dir: Path, instance: str = ""
    ) -> None:
        known = services_of(settings)
        if service not in known:
            raise ValueError(f"unknown service {service!r}; one of {', '.join(known)}")
        self.service = service
        self.module = known[service]
        self.settings = settings.with_(instance=instance) if instance else settings
        self.log = log_dir / (f"{service}-{instance}.log" if instance else f"{service}.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id, while started."""
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        """Started and not exited."""
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        """Start the process (does not wait for it to be ready)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ) | self.settings.to_env()
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ready(self) -> bool:
        """Whether it printed its ready line; raises if it exited instead."""
        assert self.process is not None, "spawn() first"
        if f"{self.service} ready".encode() in self.log.read_bytes():
            return True
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.service} exited with {self.process.returncode}:\n{tail}")
        return False

    def start(self, timeout: float = 60.0) -> None:
        """Spawn and wait until ready (blocking)."""
        self.spawn()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.service} not ready after {timeout}s; see {self.log}")
            time.sleep(0.1)

    async def started(self, timeout: float = 60.0) -> None:
        """Spawn and wait until ready (in an event loop)."""
        self.spawn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.ready():
            if loop.time() > deadline:
                raise RuntimeError(f"{self.service} not ready after {timeout}s; see {self.log}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no acks, nothing flushed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, wait, SIGKILL if it does not stop in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
