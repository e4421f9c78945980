"""``saga topology check``, the non-declaring start-up, the policies and the per-service
permissions, against a stand-in connection (no broker)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiormq.exceptions import ChannelNotFoundEntity

from orchestrator.cli import topology as cli
from orchestrator.errors import StartupRefused
from orchestrator.messaging.permissions import DEFAULT_EXCHANGE, service_users
from orchestrator.messaging.topology import Topology, TopologyMissing
from orchestrator.settings import Settings

NS = "unit-topo"


@dataclass
class FakeChannel:
    """Answers passive declarations; a missing name closes it, as the broker does."""

    existing: set[str]
    is_closed: bool = False

    async def declare_exchange(self, name: str, *, passive: bool = False, **_: Any) -> None:
        self._look(name, passive)

    async def declare_queue(self, name: str, *, passive: bool = False, **_: Any) -> None:
        self._look(name, passive)

    def _look(self, name: str, passive: bool) -> None:
        assert passive, "a check must not declare"
        assert not self.is_closed, "used a channel the broker closed"
        if name not in self.existing:
            self.is_closed = True
            raise ChannelNotFoundEntity(f"NOT_FOUND - no such thing '{name}'")

    async def close(self) -> None:
        self.is_closed = True


@dataclass
class FakeConnection:
    existing: set[str]
    channels: list[FakeChannel] = field(default_factory=list)

    async def channel(self) -> FakeChannel:
        self.channels.append(FakeChannel(self.existing))
        return self.channels[-1]

    async def close(self) -> None:
        pass


def topology(**changes: Any) -> Topology:
    return Settings(namespace=NS).with_(**changes).topology()


def everything(t: Topology) -> set[str]:
    return {*t.exchanges, *t.all_queue_names()}


async def test_check_reports_a_missing_queue_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    t = topology()
    gone = t.queue("payment.commands").retry_queue(1)
    connection = FakeConnection(everything(t) - {gone})

    async def connect(url: str, name: str) -> FakeConnection:
        return connection

    monkeypatch.setattr(cli, "_connect", connect)
    args = argparse.Namespace(url=None, management_url=None)
    code = await cli.cmd_check(Settings(namespace=NS), args)
    out, err = capsys.readouterr()
    assert code == 1
    assert out.splitlines() == [f"missing queue {gone}"]
    assert "saga topology apply" in err


async def test_check_of_a_complete_topology_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    t = topology()

    async def connect(url: str, name: str) -> FakeConnection:
        return FakeConnection(everything(t))

    monkeypatch.setattr(cli, "_connect", connect)
    code = await cli.cmd_check(Settings(namespace=NS), argparse.Namespace(url=None))
    assert code == 0
    assert "complete" in capsys.readouterr().out


async def test_non_declaring_start_names_what_is_missing_and_the_fix() -> None:
    t = topology(declare_topology=False)
    missing = {t.events_exchange, t.queue("inventory.commands").dlq}
    with pytest.raises(TopologyMissing) as refused:
        await t.prepare(FakeConnection(everything(t) - missing))  # type: ignore[arg-type]
    text = str(refused.value)
    assert f"exchange {t.events_exchange}" in text
    assert f"queue {t.queue('inventory.commands').dlq}" in text
    assert "saga topology apply" in text
    await t.prepare(FakeConnection(everything(t)))  # type: ignore[arg-type]


async def test_policy_mode_refuses_services_that_would_declare() -> None:
    with pytest.raises(StartupRefused):
        await topology(topology_policies=True).prepare(FakeConnection(set()))  # type: ignore[arg-type]


def test_policy_mode_moves_delays_and_delivery_limit_out_of_arguments() -> None:
    t = topology(topology_policies=True, retry_delays=(0.2, 2.0))
    q = t.queue("payment.commands")
    assert [q.retry_queue(i) for i in range(2)] == [f"{q.name}.retry.1", f"{q.name}.retry.2"]
    assert "x-message-ttl" not in t.retry_queue_arguments(q, 0)
    assert t.retry_queue_arguments(q, 0)["x-dead-letter-routing-key"] == q.name
    assert "x-delivery-limit" not in t.work_queue_arguments(q)
    policies = {p.name: p for p in t.policies()}
    assert policies[f"{NS}.retry.1"].definition == {"message-ttl": 200}
    assert policies[f"{NS}.work"].definition == {"delivery-limit": 20}
    assert re.match(policies[f"{NS}.retry.2"].pattern, q.retry_queue(1))
    assert not re.match(policies[f"{NS}.retry.2"].pattern, q.retry_queue(0))
    assert not re.match(policies[f"{NS}.work"].pattern, f"{NS}.x.{q.name}")
    # Another namespace that starts with this one's name is not matched.
    assert not re.match(policies[f"{NS}.work"].pattern, q.name.replace(NS, NS + ".eu", 1))


def test_argument_mode_declares_as_before() -> None:
    t = topology(retry_delays=(0.2, 2.0))
    q = t.queue("payment.commands")
    assert q.retry_queue(1) == f"{q.name}.retry.2s"
    assert t.retry_queue_arguments(q, 1)["x-message-ttl"] == 2000
    assert t.work_queue_arguments(q)["x-delivery-limit"] == 20


def test_each_service_reads_only_its_own_queues() -> None:
    t = topology()
    users = {u.service: u for u in service_users(t)}
    assert set(users) == {
        "orchestrator",
        "inventory",
        "payment",
        "shipping",
        "returns",
        "readside",
        "api",
    }
    readable = {
        s: {q.name for q in t.work_queues if re.match(u.read, q.name)} for s, u in users.items()
    }
    assert readable["payment"] == {f"{NS}.payment.commands", f"{NS}.payment.events"}
    assert readable["orchestrator"] == {q.name for q in t.work_queues if ".orchestrator." in q.name}
    owners = [s for s in readable if s != "api"]
    for q in t.work_queues:  # every work queue has exactly one consumer service
        assert [s for s in owners if q.name in readable[s]] != []
        assert len([s for s in owners if q.name in readable[s]]) == 1, q.name
    for s in owners:
        assert users[s].configure == "^$"
        assert re.match(users[s].write, DEFAULT_EXCHANGE), s  # retries and dead letters
    assert not re.match(users["payment"].write, t.events_exchange)
    assert re.match(users["inventory"].write, t.events_exchange)
    assert users["inventory"].topic_write == {t.events_exchange: r"^(inventory\.restocked)$"}
    assert not re.match(users["orchestrator"].write, t.replies_exchange)
    commands = users["orchestrator"].topic_write[t.commands_exchange]
    assert re.match(commands, "inventory.reserve_stock")
    assert not re.match(commands, "orders.place_order")
