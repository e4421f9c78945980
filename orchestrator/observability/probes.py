"""The small HTTP server of every service process: ``/metrics``, ``/health``, ``/ready``.

It listens on ``SAGA_METRICS_HOST:SAGA_METRICS_PORT`` (off when the port is 0) in the
service's own event loop, so ``/health`` answering 200 means the loop runs. ``/ready``
asks each service attached to the server whether it is connected to the broker and the
store and consuming: 200 with ``ok`` for every check, 503 naming the ones that are not.
``/metrics`` is ``prometheus_client``'s text of the process registry; no scrape reads the
store.

Several services of one process (as in the tests) share the server of their port: the
first one starts it, each attaches its readiness check, the last one to leave stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = ["ProbeServer", "Readiness", "attach", "detach", "service_checks"]

log = structlog.get_logger("probes")

Readiness = Callable[[], Awaitable[dict[str, str]]]
"""A service's checks: name -> ``ok`` or what is wrong."""

READY_TIMEOUT = 3.0
MAX_REQUEST_LINE = 8192


class ProbeServer:
    """One port of one process, answering GET requests with HTTP/1.1, connection close."""

    def __init__(self, *, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.checks: dict[str, Readiness] = {}
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; raises :class:`OrchestratorError` if the port is taken."""
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as e:
            raise OrchestratorError(
                f"SAGA_METRICS_PORT={self.port}: cannot listen on {self.host}: {e}"
            ) from e
        log.info("probes_listening", host=self.host, port=self.port)

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def ready(self) -> tuple[bool, dict[str, str]]:
        """Every attached service's checks, each bounded in time."""
        results: dict[str, str] = {}
        for service, check in list(self.checks.items()):
            try:
                found = await asyncio.wait_for(check(), timeout=READY_TIMEOUT)
            except Exception as e:  # a check that fails or hangs means not ready
                found = {"checks": f"failed: {e!r}"}
            results.update({f"{service}.{k}": v for k, v in found.items()})
        ok = bool(results) and all(v == "ok" for v in results.values())
        return ok, results

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            while (await asyncio.wait_for(reader.readline(), timeout=10)).strip():
                pass  # headers: nothing here depends on them
            status, kind, body = await self._answer(line[:MAX_REQUEST_LINE])
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("ascii") + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a client that went away or never spoke
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> tuple[str, str, bytes]:
        parts = line.decode("latin-1").split()
        if len(parts) < 2:
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, path = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
        if path == "/health":
            return "200 OK", "application/json", b'{"status": "ok"}'
        if path == "/ready":
            ok, checks = await self.ready()
            status = "200 OK" if ok else "503 Service Unavailable"
            return status, "application/json", json.dumps(checks).encode()
        return "404 Not Found", "text/plain", b"/metrics, /health or /ready\n"


_servers: dict[int, ProbeServer] = {}


async def attach(settings: Settings, name: str, check: Readiness) -> ProbeServer | None:
    """Serve this process's probes on the settings' port (None when it is 0), with
    ``check`` as service ``name``'s part of ``/ready``."""
    port = settings.metrics_port
    if not port:
        return None
    server = _servers.get(port)
    if server is None:
        server = ProbeServer(host=settings.metrics_host, port=port)
        await server.start()
        _servers[port] = server
    server.checks[_unique(server, name)] = check
    return server


async def detach(server: ProbeServer | None, check: Readiness) -> None:
    """Take ``check`` off ``/ready``; the server stops when no service is left on it."""
    if server is None:
        return
    for name, found in list(server.checks.items()):
        if found == check:
            del server.checks[name]
    if not server.checks and _servers.get(server.port) is server:
        del _servers[server.port]
        await server.close()


def _unique(server: ProbeServer, name: str) -> str:
    if name not in server.checks:
        return name
    n = 2
    while f"{name}#{n}" in server.checks:
        n += 1
    return f"{name}#{n}"


async def service_checks(*, connection: Any, client: Any, consuming: bool) -> dict[str, str]:
    """The checks of one service: its broker connection is open, its store answers a
    ping, and it consumes every queue it should."""
    broker = "ok" if connection is not None and not connection.is_closed else "not connected"
    store = "not connected"
    if client is not None:
        try:
            await asyncio.wait_for(client.admin.command("ping"), timeout=READY_TIMEOUT)
            store = "ok"
        except Exception as e:  # any failure means not ready; the text says which
            store = f"unreachable: {e}"
    return {"broker": broker, "store": store, "consuming": "ok" if consuming else "not yet"}
