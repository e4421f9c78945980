"""Each port's contract suite runs against every adapter of the port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from orchestrator.store.connect import connect_mongo
from orchestrator.store.memory import InMemorySagaStore
from orchestrator.store.mongo import MongoSagaStore
from tests.contract.support import Store


@pytest.fixture(
    params=["memory", pytest.param("mongo", marks=pytest.mark.integration)],
)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """A fresh, empty store with every store port: in memory, or MongoDB (the real server
    or the embedded one, over TCP) in a database of its own, dropped afterwards."""
    if request.param == "memory":
        yield InMemorySagaStore()
        return
    url: str = request.getfixturevalue("mongodb_url")
    client = await connect_mongo(url, app_name="contract-saga-store")
    name = f"contract_{uuid.uuid4().hex[:12]}"
    mongo = MongoSagaStore(database=client[name])
    await mongo.ensure_indexes()
    try:
        yield mongo
    finally:
        await client.drop_database(name)
        await client.close()
