"""Outboxes and deadlines that can never be handled do not hold up the ones behind them;
commits of the previous shape are still relayed and their deadlines still fire."""

from __future__ import annotations

import asyncio
import dataclasses
import html
from datetime import timedelta
from typing import Any

import httpx
import pytest

from orchestrator.errors import BrokerUnavailable
from orchestrator.ports import OutboxPublisher
from orchestrator.runtime.engine import utcnow
from orchestrator.runtime.pacing import Backoff
from orchestrator.runtime.service import OrchestratorService
from orchestrator.saga.commits import Commit, DueDeadline, OutboxEntry
from orchestrator.saga.state import EventType, Status
from tests.browser import serve
from tests.helpers import eventually, metric_value, run_cli
from tests.integration.conftest import System, SystemFactory

pytestmark = pytest.mark.integration

RESERVE = "inventory.reserve_stock"
TOKEN = "live-work-operator-token"


class LoseFirstPublish:
    """The first publish of each matching command fails as unconfirmed (``fail``) or is
    silently lost (``lose``); later ones (the relay's, the deadline's) go through."""

    def __init__(self, inner: OutboxPublisher, saga_ids: set[str], *, mode: str) -> None:
        self.inner = inner
        self.saga_ids = saga_ids
        self.mode = mode
        self.seen: set[str] = set()

    async def publish(self, *, commit: Commit, entry: OutboxEntry) -> None:
        first = entry.message_id not in self.seen
        self.seen.add(entry.message_id)
        if first and entry.routing_key == RESERVE and commit.saga_id in self.saga_ids:
            if self.mode == "fail":
                raise BrokerUnavailable("injected: not confirmed")
            return  # "confirmed", never delivered
        await self.inner.publish(commit=commit, entry=entry)


async def first_command(system: System) -> Commit:
    """The first commit of a completed saga: its outbox holds a real ReserveStock."""
    saga_id = await system.order(("apple", 1))
    assert (await system.settle(saga_id)).status is Status.COMPLETED
    return (await system.client.history(saga_id))[0]


def bad_copies(template: Commit) -> list[Commit]:
    """Three commits whose outbox can never be published, stored a minute ago: a route
    that is gone, a type no contract has, a body that no longer validates."""
    entry = next(o for o in template.outbox if o.kind == "command")
    broken = [
        dataclasses.replace(entry, routing_key="ghost.reserve_stock"),
        dataclasses.replace(entry, type="inventory.reserve_stock.v99"),
        dataclasses.replace(entry, body={"unexpected": True}),
    ]
    minute_ago = utcnow().replace(microsecond=0) - timedelta(minutes=1)
    return [
        dataclasses.replace(
            template,
            saga_id=f"bad-{i}-{template.saga_id[:8]}",
            outbox=(dataclasses.replace(o, message_id=f"bad-{i}:{o.message_id}"),),
            created_at=minute_ago,
            deadline=None,
        )
        for i, o in enumerate(broken)
    ]


async def test_unpublishable_outboxes_at_the_head_do_not_block_the_relay(
    system: System,
) -> None:
    """With a relay batch of 2 and three outboxes that can never publish at the head,
    newer commits whose first publish failed are still relayed and their sagas
    complete; the bad ones are retried with backoff, then parked with the reason."""
    orchestrator = system.orchestrator
    relay = orchestrator.relay
    relay.batch_size = 2
    relay.backoff = Backoff(base=0.1, max_attempts=2)
    relay.pacer.idle = 1.0  # an operator's retry (another process) is seen within this
    await system.inventory.inventory.set_stock("apple", 10)
    bad = bad_copies(await first_command(system))
    for commit in bad:
        await orchestrator.store.append(commit)

    good = {f"good{i:029d}{k}" for i, k in enumerate("abc")}
    dispatcher = orchestrator.runtime.dispatcher
    dispatcher.publisher = LoseFirstPublish(dispatcher.publisher, good, mode="fail")
    for saga_id in good:
        await system.order(("apple", 1), saga_id=saga_id)
    for saga_id in good:  # far sooner than the step deadline (30 s) could rescue them
        assert (await system.settle(saga_id, timeout=20)).status is Status.COMPLETED

    parked = await eventually(
        orchestrator.store.parked, until=lambda p: len(p) == 3, what="bad outboxes parked"
    )
    assert {p.saga_id for p in parked} == {c.saga_id for c in bad}
    reasons = " | ".join(p.reason for p in parked)
    assert "Unroutable" in reasons, reasons
    assert all(p.kind == "outbox" and p.attempts == 2 for p in parked)
    assert relay.stats.parked == 3
    # a saga's last commit is stored (settled) before its outbox is published
    await eventually(
        orchestrator.store.live_work,
        until=lambda w: (w.parked_outbox, w.pending_outbox) == (3, 0),
        what="every good outbox published, only the bad ones parked",
    )

    code, out, _ = await run_cli(system.settings, "outbox", "list")
    assert code == 1, "exit 1: something is parked"
    assert "parked outboxes: 3" in out
    assert all(p.commit_id in out for p in parked)
    dropped, retried = parked[0].commit_id, parked[1].commit_id
    code, out, _ = await run_cli(system.settings, "outbox", "drop", dropped)
    assert (code, f"{dropped}: outbox dropped") == (0, out.split(" (")[0].strip())
    code, out, _ = await run_cli(system.settings, "outbox", "retry", retried)
    assert code == 0, out
    left = await eventually(
        orchestrator.store.parked,
        until=lambda p: (
            {x.commit_id for x in p} == {parked[1].commit_id, parked[2].commit_id}
            and all(x.attempts == 2 for x in p)
        ),
        what="the retried outbox failing twice more and parked again",
    )
    assert dropped not in {x.commit_id for x in left}


async def test_deadlines_that_keep_failing_do_not_block_the_watcher(
    make_system: SystemFactory,
) -> None:
    """With a watcher batch of 2 and three sagas whose deadline handling always fails at
    the head, the deadlines behind them still fire (their lost commands are resent and
    the sagas complete); the failing ones are retried with backoff, then parked."""
    system = await make_system(step_timeout=1.0, deadline_poll=0.1)
    orchestrator = system.orchestrator
    watcher = orchestrator.deadlines
    watcher.batch_size = 2
    watcher.backoff = Backoff(base=0.1, max_attempts=2)
    await system.inventory.inventory.set_stock("apple", 10)
    bad = {f"bad{i:030d}" for i in range(3)}
    good = {f"good{i:029d}" for i in range(3)}
    runtime = orchestrator.runtime
    dispatcher = runtime.dispatcher
    dispatcher.publisher = LoseFirstPublish(dispatcher.publisher, bad | good, mode="lose")
    real_on_deadline = runtime.on_deadline

    async def broken_for_bad(due: DueDeadline) -> Any:
        if due.saga_id in bad:
            raise RuntimeError(f"injected: saga {due.saga_id} cannot be handled")
        return await real_on_deadline(due)

    runtime.on_deadline = broken_for_bad  # type: ignore[method-assign]
    for saga_id in sorted(bad):  # earlier deadlines: the head of the watcher's query
        await system.order(("apple", 1), saga_id=saga_id)
    await asyncio.sleep(0.05)
    for saga_id in sorted(good):
        await system.order(("apple", 1), saga_id=saga_id)

    for saga_id in good:
        state = await system.settle(saga_id, timeout=20)
        assert state.status is Status.COMPLETED
        history = await system.client.history(saga_id)
        assert EventType.COMMAND_RESENT in {e.type for c in history for e in c.events}
    parked = await eventually(
        orchestrator.store.parked, until=lambda p: len(p) == 3, what="bad deadlines parked"
    )
    assert {p.saga_id for p in parked} == bad
    assert all(p.kind == "deadline" and "injected" in p.reason for p in parked)
    assert watcher.stats.parked == 3


async def test_commits_of_the_previous_shape_are_relayed_and_their_deadlines_fire(
    make_system: SystemFactory,
) -> None:
    """A database written by the previous version (``dispatched``/``deadline`` fields,
    its indexes): after an upgrade, an unpublished outbox is relayed and a passed
    deadline fires (its lost command is resent), and both sagas complete."""
    system = await make_system(step_timeout=2.0, step_max_sends=3)
    await system.inventory.inventory.set_stock("apple", 10)
    relayed, timed = "legacyrelay" + "0" * 21, "legacydeadline" + "0" * 18
    dispatcher = system.orchestrator.runtime.dispatcher
    dispatcher.publisher = LoseFirstPublish(dispatcher.publisher, {relayed, timed}, mode="lose")
    for saga_id in (relayed, timed):
        await system.order(("apple", 1), saga_id=saga_id)
    commits = system.client.store.commits
    await eventually(
        lambda: commits.count_documents({"_id": {"$in": [f"{relayed}:1", f"{timed}:1"]}}),
        until=lambda n: n == 2,
        what="both first commits stored",
    )
    await system.orchestrator.kill()

    for saga_id, dispatched in ((relayed, False), (timed, True)):
        deadline = (await system.client.state(saga_id)).deadline
        assert deadline is not None
        old = {"dispatched": dispatched, "deadline": deadline}
        doc = await commits.find_one({"_id": f"{saga_id}:1"})
        assert doc is not None
        for live in ("outbox_at", "deadline_at", "saga_name"):
            doc.pop(live, None)
        await commits.replace_one({"_id": doc["_id"]}, {**doc, **old})
    await commits.create_index([("dispatched", 1), ("created_at", 1)], name="outbox_pending")
    await commits.create_index([("deadline", 1)], name="deadline")

    system.orchestrator = OrchestratorService(system.settings, instance="upgraded")
    await system.orchestrator.start()
    for saga_id in (relayed, timed):
        assert (await system.settle(saga_id, timeout=30)).status is Status.COMPLETED
    assert system.orchestrator.relay.relayed >= 1
    history = await system.client.history(timed)
    assert EventType.COMMAND_RESENT in {e.type for c in history for e in c.events}


async def test_parked_outboxes_are_in_every_stuck_report_with_the_commands(
    make_system: SystemFactory,
) -> None:
    """A parked outbox shows in ``saga stuck``, ``GET /sagas/stuck`` and the UI's stuck
    page, with the reason in words and the commands that retry or drop it; the live-set
    sizes show in the stuck reports and in the API's ``/metrics``."""
    system = await make_system(operator_token=TOKEN)
    orchestrator = system.orchestrator
    orchestrator.relay.backoff = Backoff(base=0.1, max_attempts=2)
    orchestrator.relay.pacer.idle = 1.0  # sees the commit stored behind its back soon
    await system.inventory.inventory.set_stock("apple", 10)
    bad = bad_copies(await first_command(system))[0]  # its route is gone
    await orchestrator.store.append(bad)
    (parked,) = await eventually(
        orchestrator.store.parked, until=lambda p: len(p) == 1, what="bad outbox parked"
    )
    retry, drop = (f"saga outbox {verb} {parked.commit_id}" for verb in ("retry", "drop"))

    code, out, err = await run_cli(system.settings, "stuck")
    assert code == 1, (out, err)
    assert bad.saga_id in out
    assert "outbox parked" in out
    assert "Unroutable" in " ".join(out.split())
    assert "parked outboxes: 1, parked deadlines: 0" in out

    async with serve(system.settings) as (url, _app), httpx.AsyncClient(base_url=url) as http:
        listed = await http.get("/sagas/stuck", headers={"Authorization": f"Bearer {TOKEN}"})
        assert listed.status_code == 200, listed.text
        (item,) = [s for s in listed.json() if s["status"] == "outbox_parked"]
        assert (item["saga_id"], item["commit_id"]) == (bad.saga_id, parked.commit_id)
        assert "Unroutable" in item["reason"]
        assert retry in item["reason"]
        assert drop in item["reason"]

        logged_in = await http.post("/ui/login", data={"token": TOKEN, "next": "/ui/stuck"})
        assert logged_in.status_code == 303
        page = await http.get("/ui/stuck")
        assert page.status_code == 200
        text = html.unescape(page.text)
        assert 'id="parked-work"' in text
        assert f'data-commit-id="{parked.commit_id}"' in text
        assert retry in text
        assert drop in text
        assert "parked outboxes: 1, parked deadlines: 0" in text

        scraped = (await http.get("/metrics")).text
        assert metric_value(scraped, "saga_outbox_parked") == 1
        assert metric_value(scraped, "saga_deadlines_parked") == 0
        assert metric_value(scraped, "saga_outbox_pending") == 0, "the bad one is parked"
        assert metric_value(scraped, "saga_deadlines_active") == 0, "every saga has ended"

        code, out, _ = await run_cli(system.settings, "outbox", "drop", parked.commit_id)
        assert code == 0, out
        scraped = (await http.get("/metrics")).text
        assert metric_value(scraped, "saga_outbox_parked") == 0

    code, out, _ = await run_cli(system.settings, "stuck")
    assert (code, "no stuck sagas" in out) == (0, True), out
