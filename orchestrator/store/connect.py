"""MongoDB connection for every service (PyMongo's asyncio client; Motor is end-of-life)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from orchestrator.errors import StoreUnavailable

if TYPE_CHECKING:
    from orchestrator.messaging.outage import Probe

__all__ = ["connect_mongo", "store_probe"]


async def connect_mongo(
    url: str,
    *,
    app_name: str,
    timeout: float = 30.0,
    write_concern: str | int = "majority",
    read_preference: str = "primary",
    timeout_ms: int | None = 20_000,
    server_selection_timeout_ms: int = 5_000,
    connect_timeout_ms: int = 5_000,
    options: Mapping[str, Any] | None = None,
) -> AsyncMongoClient[dict[str, Any]]:
    """A client that has answered a ping, retrying until ``timeout`` seconds.

    Writes wait for ``write_concern`` (default: a majority of the replica set, so an
    election cannot roll back a commit that was acknowledged) and reads go to
    ``read_preference``. Every operation gives up after ``timeout_ms`` (``timeoutMS``,
    server selection and retries included; None for no limit), waits at most
    ``server_selection_timeout_ms`` for a suitable server, and a connection (and the
    monitor's heartbeat, which notices a server that stopped answering) at most
    ``connect_timeout_ms``. All of them override the options of ``url``. ``options``
    are further ``AsyncMongoClient`` keywords (TLS: ``tlsCAFile``,
    ``tlsCertificateKeyFile``, from ``Settings.mongodb_tls_options``)."""
    limits: dict[str, Any] = {"timeoutMS": timeout_ms} if timeout_ms else {}
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        url,
        tz_aware=True,
        appname=app_name,
        serverSelectionTimeoutMS=server_selection_timeout_ms,
        connectTimeoutMS=connect_timeout_ms,
        retryWrites=True,
        w=write_concern,
        readPreference=read_preference,
        **limits,
        **dict(options or {}),
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await client.admin.command("ping")
            return client
        except PyMongoError as e:
            if loop.time() >= deadline:
                await client.close()
                raise StoreUnavailable(f"cannot reach MongoDB: {e}") from e
            await asyncio.sleep(0.3)


def store_probe(client: AsyncMongoClient[dict[str, Any]], *, timeout: float = 2.0) -> Probe:
    """A probe for :class:`~orchestrator.messaging.outage.StoreGate`: whether a ping of
    the primary answers within ``timeout`` seconds."""

    async def probe() -> bool:
        try:
            with pymongo.timeout(timeout):
                await client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    return probe
