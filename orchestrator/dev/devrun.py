"""``saga-dev``: the whole system on one machine, for development and demos.

Makes sure RabbitMQ answers (starting a local ``rabbitmq-server`` if it is installed but
stopped), uses MONGODB_URL or starts the embedded MongoDB-protocol server under
``.data/``, starts the orchestrator, the participants of the registered sagas, the read
side and the API as separate processes (the same entry points the compose file runs),
places a sample order, prints its saga step by step, then keeps everything running
until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.client import SagaClient
from orchestrator.dev.embedded import EmbeddedMongo
from orchestrator.dev.processes import ServiceProcess, services_of
from orchestrator.settings import ConfigError, Settings

__all__ = ["ensure_rabbitmq", "main"]

DATA = Path(".data")


def say(text: str) -> None:
    """Progress for the person at the terminal."""
    print(text, flush=True)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _wait_for(check: object, what: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.5)
    say(f"  {what} did not come up within {timeout:.0f}s")
    return False


def ensure_rabbitmq(amqp_url: str, *, start: bool = True) -> bool:
    """True once the broker accepts TCP connections; starts a local server if allowed."""
    parts = urlsplit(amqp_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    if _answers(host, port):
        say(f"RabbitMQ answers at {host}:{port}")
        return True
    local = host in ("127.0.0.1", "localhost", "::1")
    if not (start and local and shutil.which("rabbitmq-server")):
        say(f"RabbitMQ does not answer at {host}:{port}. Start it, or set AMQP_URL.")
        return False
    say("RabbitMQ is installed but stopped: starting it (rabbitmq-server -detached) ...")
    subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True)
    if not _wait_for(lambda: _answers(host, port), "RabbitMQ", 120):
        return False
    if shutil.which("rabbitmqctl"):
        subprocess.run(
            ["rabbitmqctl", "await_startup"], check=False, capture_output=True, timeout=120
        )
    say(f"RabbitMQ answers at {host}:{port}")
    return True


def management_ui(amqp_url: str) -> str:
    """Where the management UI is, enabling the plugin on a local broker if needed."""
    parts = urlsplit(amqp_url)
    host = parts.hostname or "127.0.0.1"
    url = f"http://{'localhost' if host in ('127.0.0.1', '::1') else host}:15672/"

    def up() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    if up():
        return url
    if host in ("127.0.0.1", "localhost", "::1") and shutil.which("rabbitmq-plugins"):
        say("Enabling the RabbitMQ management plugin (rabbitmq-plugins enable ...)")
        subprocess.run(
            ["rabbitmq-plugins", "enable", "rabbitmq_management"],
            check=False,
            capture_output=True,
            timeout=120,
        )
        if _wait_for(up, "management UI", 60):
            return url
    return f"{url} (not reachable: enable with 'rabbitmq-plugins enable rabbitmq_management')"


class DevSystem:
    """The child processes and the embedded store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mongo: EmbeddedMongo | None = None
        self.children: dict[str, ServiceProcess] = {}
        self.logs = DATA / "logs"

    def start_store(self) -> str:
        """MONGODB_URL, or the embedded server with its data under .data/mongo."""
        if self.settings.mongodb_url:
            say("MongoDB: using MONGODB_URL")
            return self.settings.mongodb_url
        say("MongoDB: MONGODB_URL is unset, starting the embedded server (nx-27017) ...")
        self.mongo = EmbeddedMongo(DATA / "mongo")
        url = self.mongo.start()
        (DATA / "dev.env").write_text(f"MONGODB_URL={url}\n")
        say(f"MongoDB: embedded server at {url} (data in {DATA / 'mongo'})")
        return url

    def start_services(self, mongodb_url: str) -> None:
        """One process per service, logs under .data/logs."""
        settings = self.settings.with_(mongodb_url=mongodb_url)
        for name in services_of(settings):
            self.children[name] = ServiceProcess(name, settings, log_dir=self.logs)
            self.children[name].spawn()
        deadline = time.monotonic() + 60
        for name, child in self.children.items():
            while not child.ready():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start; see {child.log}")
                time.sleep(0.2)
            say(f"  {name:<13} pid {child.pid:<7} log {child.log}")

    def watch(self) -> None:
        """Block until Ctrl-C or SIGTERM, reporting any service that exits."""
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        reported: set[str] = set()
        while True:
            for name, child in self.children.items():
                if not child.alive and name not in reported:
                    reported.add(name)
                    say(f"!! {name} exited; see {child.log}")
            time.sleep(1)

    def stop(self) -> None:
        """Stop children, then the embedded store. A second Ctrl-C does not cut this short."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in self.children.values():
            child.stop()
        if self.mongo is not None:
            self.mongo.stop()


async def seed_and_show(settings: Settings) -> None:
    """Each pack with a ``seed`` part sets up its sample data and starts a sample saga,
    printed as it runs."""
    async with SagaClient(settings, name="dev-runner") as client:
        for pack in settings.packs():
            seed = pack.part("seed")
            if seed is not None:
                await seed(client, say)


DEV_TOKENS = {
    "SAGA_CLIENT_TOKEN": "dev-client-token",
    "SAGA_READ_TOKEN": "dev-read-token",
}
"""Tokens a local development system gets when none is set (printed at start)."""


def with_dev_tokens(settings: Settings) -> Settings:
    """Development tokens for the roles the environment leaves unset, so that every
    endpoint can be tried (the API itself has no default token)."""
    env = settings.env()
    extra = {**settings.extra, **{k: v for k, v in DEV_TOKENS.items() if not env.get(k)}}
    return settings.with_(
        operator_token=settings.operator_token or "dev-operator-token", extra=extra
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point ``saga-dev``."""
    parser = argparse.ArgumentParser(prog="saga-dev", description=__doc__)
    parser.add_argument(
        "--check",
        action="store_true",
        help="only make sure RabbitMQ runs (start it if local), then exit",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as e:
        sys.exit(f"configuration error: {e}")
    if not ensure_rabbitmq(settings.amqp_url):
        sys.exit(1)
    if args.check:
        return
    settings = with_dev_tokens(settings)
    system = DevSystem(settings)
    try:
        settings = settings.with_(mongodb_url=system.start_store())
        say("Starting services:")
        system.start_services(settings.require_mongodb_url())
        asyncio.run(seed_and_show(settings))
        ui = management_ui(settings.amqp_url)
        api = f"http://{settings.api_host}:{settings.api_port}"
        tokens = settings.env()
        client, reader = tokens["SAGA_CLIENT_TOKEN"], tokens["SAGA_READ_TOKEN"]
        say(f"""
Running. RabbitMQ management UI: {ui} (guest/guest); queues are named '{settings.namespace}.*'.
HTTP API: {api}/docs   development tokens (Authorization: Bearer <token>):
          operator {settings.operator_token}   client {client}   reads {reader}
Operator UI: {api}/ui   (log in with the operator token to replay, discard and resume)
Place more orders from another terminal:
    uv run saga order apple:2 pear:1 --amount 1999
    uv run saga order gpu:5            # more than in stock: fails, nothing reserved
    uv run saga order apple:1 --ship-to Atlantis   # shipping refuses: compensated
Inspect:  uv run saga status <saga-id>   uv run saga sagas   uv run saga stuck
          uv run saga stock apple pear gpu   uv run saga dlq list
          curl -H 'Authorization: Bearer {reader}' {api}/sagas?status=completed
          curl {api}/metrics
Press Ctrl-C to stop.""")
        system.watch()
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        say(f"error: {e}")
        sys.exit(1)
    finally:
        # uv forwards the terminal's Ctrl-C as well: ignore the second one at once
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("Stopping ...")
        system.stop()
