"""A store outage holds messages without counting their attempts; a failure while the
store answers is the message's own."""

from __future__ import annotations

import asyncio

import pytest

from contracts import MalformedMessage
from orchestrator.errors import StoreUnavailable
from orchestrator.messaging.outage import StoreGate
from orchestrator.settings import ConfigError, Settings
from tests.helpers import eventually


async def held_at_least(gate: StoreGate, n: int) -> None:
    await eventually(lambda: asyncio.sleep(0, gate.held), until=lambda h: h >= n, timeout=5)


class Store:
    """A store that is up or down, and a handler that fails while it is down."""

    def __init__(self) -> None:
        self.up = True
        self.pings = 0
        self.runs = 0
        self.back = asyncio.Event()

    async def probe(self) -> bool:
        self.pings += 1
        await asyncio.sleep(0.01)
        return self.up

    async def handler(self, item: str) -> None:
        self.runs += 1
        if not self.up:
            raise StoreUnavailable(f"{item}: no answer")


async def test_a_message_is_held_while_the_store_is_down_and_run_when_it_answers() -> None:
    store = Store()
    gate = StoreGate(store.probe, fresh=0.0, backoff=0.01, max_backoff=0.02)
    store.up = False
    held = [asyncio.create_task(gate.guard(store.handler)(f"m{i}")) for i in range(20)]
    await held_at_least(gate, 20)
    assert gate.outages == 1
    assert not any(t.done() for t in held)
    store.up = True
    await asyncio.wait_for(asyncio.gather(*held), timeout=5)
    assert gate.held == 0
    assert store.runs == 40, "each ran once down, once back up"
    assert store.pings < 200, "the held messages share their probes"


async def test_a_failure_while_the_store_answers_is_raised_for_the_retry_tiers() -> None:
    store = Store()
    gate = StoreGate(store.probe)

    async def failing(item: str) -> None:
        raise StoreUnavailable(f"{item}: a write this document cannot make")

    with pytest.raises(StoreUnavailable):
        await gate.guard(failing)("m")
    assert (gate.held, store.pings) == (0, 1)


async def test_malformed_messages_never_wait_for_the_store() -> None:
    store = Store()
    store.up = False
    gate = StoreGate(store.probe)

    async def malformed(item: str) -> None:
        raise MalformedMessage("bad_body", item)

    with pytest.raises(MalformedMessage):
        await gate.guard(malformed)("m")
    assert store.pings == 0


async def test_closing_the_gate_lets_held_messages_go_unsettled() -> None:
    store = Store()
    store.up = False
    gate = StoreGate(store.probe, fresh=0.0, backoff=0.01)
    held = asyncio.create_task(gate.guard(store.handler)("m"))
    await held_at_least(gate, 1)
    gate.close()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(held, timeout=5)


def test_mongodb_timeouts_are_settings_passed_to_the_client() -> None:
    defaults = Settings.from_env({})
    assert defaults.mongodb_options()["timeout_ms"] == 20_000
    assert defaults.mongodb_options()["server_selection_timeout_ms"] == 5_000
    s = Settings.from_env(
        {
            "SAGA_MONGODB_TIMEOUT_MS": "0",
            "SAGA_MONGODB_SERVER_SELECTION_TIMEOUT_MS": "1500",
            "SAGA_MONGODB_CONNECT_TIMEOUT_MS": "700",
        }
    )
    assert s.mongodb_options()["timeout_ms"] is None, "0: no limit"
    assert (s.mongodb_server_selection_timeout_ms, s.mongodb_connect_timeout_ms) == (1500, 700)
    assert Settings.from_env(s.to_env()) == s
    with pytest.raises(ConfigError, match="SAGA_MONGODB_CONNECT_TIMEOUT_MS"):
        Settings.from_env({"SAGA_MONGODB_CONNECT_TIMEOUT_MS": "0"})
