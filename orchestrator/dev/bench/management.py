"""Broker-side message counts from the RabbitMQ management HTTP API.

Each exchange's ``message_stats.publish_in`` counts every message published to it. The
benchmark's namespaces are fresh, so the sum over a namespace's exchanges, read after
the run, is exactly what the system published. The broker emits these statistics every
few seconds (``collect_statistics_interval``, 5 s by default), so they are read at the
end of a target's run, while its channels are still open and idle, once they have not
changed for longer than that interval.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

__all__ = ["Management", "ManagementUnavailable"]


class ManagementUnavailable(RuntimeError):
    """The management API does not answer (plugin disabled, remote broker, ...)."""


class Management:
    """A small read-only client of the management API."""

    def __init__(self, *, amqp_url: str, url: str | None = None) -> None:
        parts = urllib.parse.urlsplit(amqp_url)
        host = parts.hostname or "127.0.0.1"
        self.url = (url or f"http://{host}:15672/").rstrip("/") + "/"
        user = urllib.parse.unquote(parts.username or "guest")
        password = urllib.parse.unquote(parts.password or "guest")
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self.vhost = urllib.parse.quote(vhost, safe="")

    def _get(self, path: str, *, missing_ok: bool = False) -> Any:
        """GET ``api/<path>``; None for a 404 if ``missing_ok``."""
        request = urllib.request.Request(self.url + "api/" + path)
        request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            if missing_ok and e.code == 404:
                return None
            raise ManagementUnavailable(f"{self.url}api/{path}: {e}") from e
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise ManagementUnavailable(f"{self.url}api/{path}: {e}") from e

    def version(self) -> str:
        """The broker's version (also checks that the API answers)."""
        return str(self._get("overview").get("rabbitmq_version", "?"))

    def published_to(self, exchanges: Sequence[str]) -> int:
        """Messages published to these exchanges so far (missing exchanges count 0)."""
        total = 0
        for name in exchanges:
            path = f"exchanges/{self.vhost}/{urllib.parse.quote(name, safe='')}"
            found = self._get(path, missing_ok=True) or {}
            total += int((found.get("message_stats") or {}).get("publish_in", 0))
        return total

    async def settled_publishes(
        self,
        exchanges: Sequence[str],
        *,
        at_least: int,
        quiet: float = 5.5,
        timeout: float = 30.0,
    ) -> int:
        """The publish count once it is at least ``at_least`` and has not changed for
        ``quiet`` seconds: longer than the broker's statistics interval (5 s), so every
        open channel has reported its final count. At the timeout, whatever it is then.
        Call it while the publishers' channels are still open and idle."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while True:
            value = await asyncio.to_thread(self.published_to, exchanges)
            now = time.monotonic()
            if value != last:
                last, since = value, now
            elif value >= at_least and now - since >= quiet:
                return value
            if now >= deadline:
                return value
            await asyncio.sleep(0.5)

    def queue_depths(self, names: Sequence[str]) -> dict[str, int]:
        """Messages in each of these queues (ready + unacked)."""
        depths: dict[str, int] = {}
        for name in names:
            path = f"queues/{self.vhost}/{urllib.parse.quote(name, safe='')}"
            found = self._get(path, missing_ok=True) or {}
            depths[name] = int(found.get("messages") or 0)
        return depths
