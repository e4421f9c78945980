"""Every UI page with 100,000 sagas in the store reads a bounded number of summaries: the
list a page (plus one) with any filter, the next page by its keyset, the stuck page at
most three bounded index reads. Counted at the driver: every document the store sends."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.monitoring import CommandListener, CommandStartedEvent, CommandSucceededEvent

from orchestrator.readside import SagaSummaries
from orchestrator.saga.commits import Commit
from orchestrator.saga.state import EventType, SagaEvent
from orchestrator.store.mongo import MongoSagaStore
from orchestrator.ui.queries import PAGE_SIZE
from orchestrator.ui.sagas import STUCK_LIMIT
from tests.browser import serve

if TYPE_CHECKING:
    from fastapi import FastAPI

    from orchestrator.settings import Settings

pytestmark = pytest.mark.integration

SAGAS = 100_000
STEPS = ("reserve_stock", "authorize_payment", "schedule_shipment")


class Fetched(CommandListener):
    """Counts the documents the server returns per collection (find and getMore)."""

    def __init__(self) -> None:
        self.collections: dict[int, str] = {}
        self.documents: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name in ("find", "getMore"):
            name = event.command.get("find") or event.command.get("collection")
            self.collections[event.request_id] = str(name)
        elif event.command_name in ("count", "aggregate", "distinct"):
            self.commands[event.command_name] += 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        name = self.collections.pop(event.request_id, None)
        if name is not None:
            cursor = event.reply.get("cursor", {})
            batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
            self.documents[name] += len(batch)

    def failed(self, event: Any) -> None:
        self.collections.pop(event.request_id, None)

    def take(self) -> tuple[int, int]:
        """(summaries fetched, count/aggregate commands) since the last take."""
        taken = self.documents["readside_sagas"], sum(self.commands.values())
        self.documents.clear()
        self.commands.clear()
        return taken


def summary(i: int, now: datetime) -> dict[str, Any]:
    """Mostly finished sagas, 2% running, 1% parked; one started per second."""
    status = "completed" if i % 100 > 2 else ("running", "running", "compensation_failed")[i % 100]
    started = now - timedelta(seconds=i, minutes=30)
    return {
        "_id": f"saga-{i:06d}",
        "saga_name": "order_fulfilment",
        "saga_version": 1,
        "version": 7,
        "status": status,
        "step": STEPS[i % 3] if status != "completed" else None,
        "reference": f"order-{i}",
        "started_at": started,
        "deadline": started + timedelta(seconds=30) if status == "running" else None,
        "updated_at": started + timedelta(seconds=3),
        "events": 7,
        "attempt": 1,
        "compensations": 0,
        "resends": 0,
        "last_error": "VoidPayment kept failing" if status == "compensation_failed" else None,
        "failed_step": None,
        "waiting_since": None,
    }


async def seed(settings: Settings, now: datetime) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_url)
    try:
        docs = client[settings.database]["readside_sagas"]
        for start in range(0, SAGAS, 10_000):
            batch = [summary(i, now) for i in range(start, min(start + 10_000, SAGAS))]
            await docs.insert_many(batch, ordered=False)
        started = SagaEvent(
            type=EventType.SAGA_STARTED,
            at=now,
            data={"saga_name": "order_fulfilment", "start": {"order_id": "o-1"}},
        )
        commit = Commit(
            saga_id="saga-000001",
            version=1,
            causation_id="start",
            events=(started,),
            saga_name="order_fulfilment",
            created_at=now,
        )
        await MongoSagaStore(database=client[settings.database]).append(commit)
    finally:
        await client.close()


def monitored(fetched: Fetched, settings: Settings) -> Any:
    """Point the UI's summary reads at a client that counts what it receives."""

    def adjust(app: FastAPI) -> None:
        app.state.monitored = AsyncMongoClient(
            settings.mongodb_url, tz_aware=True, event_listeners=[fetched]
        )

    return adjust


def rows(html: str) -> list[str]:
    return re.findall(r'<tr data-saga-id="([^"]+)"', html)


def next_link(html: str) -> str:
    found = re.search(r'<a href="([^"]+)" id="next-page">', html)
    assert found, "a next page"
    return found.group(1).replace("&amp;", "&")


async def test_every_page_reads_a_bounded_number_of_summaries_with_100000_sagas(
    settings: Settings,
) -> None:
    now = datetime.now(UTC)
    await seed(settings, now)
    settings = settings.with_(extra={**settings.extra, "SAGA_READS_OPEN": "true"})  # reads only
    fetched = Fetched()
    async with serve(settings, adjust=monitored(fetched, settings)) as (url, app):
        svc = app.state.services
        svc.summaries = SagaSummaries(database=app.state.monitored[settings.database])
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            first = await http.get("/ui/sagas")  # also makes the UI's indexes, once
            assert first.status_code == 200
            assert rows(first.text)[:2] == ["saga-000000", "saga-000001"]
            fetched.take()

            pages = {
                "/ui/sagas": PAGE_SIZE,
                "/ui/sagas?status=running": PAGE_SIZE,
                "/ui/sagas?saga=order_fulfilment": PAGE_SIZE,
                "/ui/sagas?saga=order_fulfilment&status=compensation_failed": PAGE_SIZE,
                "/ui/sagas?saga=order_fulfilment&step=authorize_payment&status=running": 50,
                "/ui/sagas?age=1d": PAGE_SIZE,
                "/ui/sagas?status=failed": 0,
            }
            for path, shown in pages.items():
                page = await http.get(path)
                assert page.status_code == 200, path
                assert len(rows(page.text)) == shown, path
                documents, counts = fetched.take()
                assert documents <= PAGE_SIZE + 1, path
                assert counts == 0, path

            one = await http.get("/ui/sagas?status=running")
            second = await http.get(next_link(one.text))
            assert fetched.take()[0] <= 2 * (PAGE_SIZE + 1)
            ones, twos = rows(one.text), rows(second.text)
            assert len(twos) == PAGE_SIZE
            assert not set(ones) & set(twos)
            assert int(twos[0][5:]) > int(ones[-1][5:]), "the next page starts after this one"

            stuck = await http.get("/ui/stuck")
            assert stuck.status_code == 200
            assert len(rows(stuck.text)) == STUCK_LIMIT
            assert fetched.take()[0] <= 3 * STUCK_LIMIT

            saga = await http.get("/ui/sagas/saga-000001")
            assert saga.status_code == 200
            assert "order_fulfilment" in saga.text
            assert fetched.take() == (1, 0), "its own summary only"
    await app.state.monitored.close()
