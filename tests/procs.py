"""Services as real processes, for tests that kill them with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from orchestrator.settings import Settings

MODULES = {
    "orchestrator": "orchestrator",
    "inventory": "participants.inventory",
    "payment": "participants.payment",
    "shipping": "participants.shipping",
}


def service_env(settings: Settings, instance: str) -> dict[str, str]:
    """The environment that gives a service process exactly these settings."""
    return dict(
        os.environ,
        AMQP_URL=settings.amqp_url,
        MONGODB_URL=settings.require_mongodb_url(),
        SAGA_NAMESPACE=settings.namespace,
        SAGA_DATABASE=settings.database,
        SAGA_QUEUE_TYPE=settings.queue_type,
        SAGA_RETRY_DELAYS=",".join(str(d) for d in settings.retry_delays),
        SAGA_STEP_TIMEOUT=str(settings.step_timeout),
        SAGA_STEP_MAX_SENDS=str(settings.step_max_sends),
        SAGA_RELAY_GRACE=str(settings.relay_grace),
        SAGA_RELAY_INTERVAL=str(settings.relay_interval),
        SAGA_INSTANCE=instance,
        LOG_FORMAT="json",
    )


class ServiceProcess:
    """One service in its own process; its log goes to a file in ``folder``."""

    def __init__(self, service: str, settings: Settings, folder: Path, instance: str) -> None:
        self.service = service
        self.settings = settings
        self.log = folder / f"{service}-{instance}.log"
        self.instance = instance
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 60.0) -> None:
        """Start and wait for its 'ready' line."""
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", MODULES[self.service]],
                env=service_env(self.settings, self.instance),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        marker = f"{self.service} ready".encode()
        while marker not in self.log.read_bytes():
            if self.process.poll() is not None or loop.time() > deadline:
                raise RuntimeError(f"{self.service} did not start: {self.log.read_text()[-2000:]}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no acks, nothing flushed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
