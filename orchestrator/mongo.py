"""MongoDB connection for every service (PyMongo's asyncio client; Motor is end-of-life)."""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from orchestrator.errors import StoreUnavailable

__all__ = ["connect_mongo"]


async def connect_mongo(
    url: str, *, app_name: str, timeout: float = 30.0
) -> AsyncMongoClient[dict[str, Any]]:
    """A client that has answered a ping, retrying until ``timeout`` seconds."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        url,
        tz_aware=True,
        appname=app_name,
        serverSelectionTimeoutMS=5000,
        retryWrites=True,
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
