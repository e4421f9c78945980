"""Write concern and read preference are explicit settings, applied to every client."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient

from orchestrator.settings import ConfigError, Settings
from orchestrator.store import connect


def test_writes_wait_for_a_majority_and_reads_go_to_the_primary_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.mongodb_write_concern == "majority"
    assert settings.mongodb_read_preference == "primary"


def test_the_variables_are_read_checked_and_passed_on() -> None:
    settings = Settings.from_env(
        {"SAGA_MONGODB_WRITE_CONCERN": "2", "SAGA_MONGODB_READ_PREFERENCE": "primaryPreferred"}
    )
    assert (settings.mongodb_write_concern, settings.mongodb_read_preference) == (
        2,
        "primaryPreferred",
    )
    assert Settings.from_env(settings.to_env()) == settings
    tagged = Settings.from_env({"SAGA_MONGODB_WRITE_CONCERN": "two_datacenters"})
    assert tagged.mongodb_write_concern == "two_datacenters"
    with pytest.raises(ConfigError, match="SAGA_MONGODB_READ_PREFERENCE='secundary'"):
        Settings.from_env({"SAGA_MONGODB_READ_PREFERENCE": "secundary"})
    with pytest.raises(ConfigError, match="SAGA_MONGODB_WRITE_CONCERN='-1'"):
        Settings.from_env({"SAGA_MONGODB_WRITE_CONCERN": "-1"})


async def test_connect_mongo_gives_the_client_the_write_concern_and_read_preference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The options reach PyMongo's client, where they override those of the URL."""
    made: list[AsyncMongoClient[dict[str, Any]]] = []

    class Answering(AsyncMongoClient[dict[str, Any]]):
        def __init__(self, url: str, **options: Any) -> None:
            super().__init__(url, connect=False, **options)
            made.append(self)

        async def _ping(self, *_: Any) -> dict[str, int]:
            return {"ok": 1}

        @property
        def admin(self) -> Any:
            return type("Admin", (), {"command": self._ping})()

    monkeypatch.setattr(connect, "AsyncMongoClient", Answering)
    client = await connect.connect_mongo(
        "mongodb://127.0.0.1:1/?w=1&readPreference=nearest",
        app_name="test.write-concern",
        write_concern="majority",
        read_preference="secondaryPreferred",
        timeout_ms=4_000,
        server_selection_timeout_ms=1_500,
        connect_timeout_ms=700,
    )
    assert made == [client]
    assert client.options.timeout == 4.0
    assert client.options.server_selection_timeout == 1.5
    assert client.options.pool_options.connect_timeout == 0.7
    assert client.write_concern.document == {"w": "majority"}
    assert client.read_preference.mongos_mode == "secondaryPreferred"
    await client.close()
