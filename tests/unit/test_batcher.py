"""Group commit and paced polling, against a fake store (no I/O)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
import structlog

from orchestrator.errors import ConcurrencyConflict, DuplicateMessage, StoreUnavailable
from orchestrator.runtime.batcher import Bookkeeper, CommitBatcher
from orchestrator.runtime.pacing import Backoff, Pacer
from orchestrator.saga.commits import Commit
from orchestrator.saga.state import EventType, SagaEvent, SagaState

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def commit(saga_id: str, version: int = 1) -> Commit:
    return Commit(
        saga_id=saga_id,
        version=version,
        causation_id=f"{saga_id}:m{version}",
        events=(SagaEvent(type=EventType.STEP_STARTED, at=NOW, step="a"),),
        created_at=NOW,
    )


async def turns(n: int = 5) -> None:
    """Let the event loop run a few turns (tasks start, timers of 0 fire)."""
    for _ in range(n):
        await asyncio.sleep(0)


class GatedStore:
    """append_many waits for ``release`` and then answers ``outcomes`` (or raises)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None
        self.outcomes: dict[str, Exception] = {}

    async def load(self, saga_id: str) -> SagaState:
        return SagaState(saga_id=saga_id)

    async def append(self, commit: Commit) -> None:
        raise AssertionError("the batcher appends in batches")

    async def append_many(self, commits: Sequence[Commit]) -> list[Exception | None]:
        self.batches.append([c.saga_id for c in commits])
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [self.outcomes.get(c.saga_id) for c in commits]


async def test_concurrent_appends_share_one_insert_and_each_gets_its_own_outcome() -> None:
    store = GatedStore()
    store.outcomes = {
        "dup": DuplicateMessage("already processed"),
        "taken": ConcurrencyConflict("version taken"),
    }
    batcher = CommitBatcher(store=store)
    names = ["a", "dup", "b", "taken", "c"]
    tasks = [asyncio.create_task(batcher.append(commit(n))) for n in names]
    await turns()  # every handler queues its commit, then the batch goes
    assert store.batches == [names]
    assert not any(t.done() for t in tasks), "nobody is answered before the insert returns"
    store.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    outcome = dict(zip(names, results, strict=True))
    assert outcome["a"] is None
    assert outcome["b"] is None
    assert outcome["c"] is None
    assert isinstance(outcome["dup"], DuplicateMessage)
    assert isinstance(outcome["taken"], ConcurrencyConflict)
    assert batcher.appended == 3


async def test_a_failed_round_trip_fails_every_commit_of_the_batch() -> None:
    store = GatedStore()
    store.fail = StoreUnavailable("connection reset")
    batcher = CommitBatcher(store=store)
    tasks = [asyncio.create_task(batcher.append(commit(n))) for n in "abcd"]
    await turns()
    store.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert batcher.appended == 0


async def test_commits_arriving_during_an_insert_form_the_next_batch() -> None:
    store = GatedStore()
    batcher = CommitBatcher(store=store, max_batch=3)
    first = [asyncio.create_task(batcher.append(commit(n))) for n in "ab"]
    await turns()
    later = [asyncio.create_task(batcher.append(commit(n))) for n in "cdefg"]
    await turns()
    assert store.batches == [["a", "b"]], "one insert in flight at a time"
    store.release.set()
    await asyncio.gather(*first, *later)
    assert store.batches == [["a", "b"], ["c", "d", "e"], ["f", "g"]]


async def test_stored_commits_supersede_the_previous_deadline_and_call_hooks() -> None:
    store = GatedStore()
    store.release.set()
    cleared: list[str] = []

    class Flags:
        async def mark_dispatched(self, ids: Sequence[str]) -> None:
            del ids

        async def clear_deadlines(self, ids: Sequence[str]) -> None:
            cleared.extend(ids)

    bookkeeper = Bookkeeper(outbox=Flags(), deadlines=Flags())
    batcher = CommitBatcher(store=store, bookkeeper=bookkeeper)
    seen: list[str] = []
    batcher.on_stored.append(lambda c: seen.append(c.id))
    await asyncio.gather(batcher.append(commit("s", 1)), batcher.append(commit("t", 3)))
    await bookkeeper.flush()
    assert seen == ["s:1", "t:3"]
    assert cleared == ["t:2"]


def test_backoff_doubles_up_to_the_cap_and_parks_after_max_attempts() -> None:
    backoff = Backoff(base=1.0, cap=5.0, max_attempts=4)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert not backoff.exhausted(3)
    assert backoff.exhausted(4)


async def test_a_pacer_sleeps_until_woken_but_never_below_its_interval() -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(interval=0.05, idle=30.0)
    pacer.passed()
    started = loop.time()
    sleeping = asyncio.create_task(pacer.sleep(30.0))
    await asyncio.sleep(0)
    pacer.wake_in(0.0)  # floored at the interval after the last pass
    await asyncio.wait_for(sleeping, timeout=5)
    assert 0.04 <= loop.time() - started < 5


@pytest.mark.parametrize("idle", [0.2])
async def test_a_pacer_caps_a_long_sleep_at_idle(idle: float) -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(interval=0.01, idle=idle)
    pacer.passed()
    started = loop.time()
    await asyncio.wait_for(pacer.sleep(3600), timeout=5)
    assert loop.time() - started < 2


async def test_a_batch_logs_with_the_service_but_not_the_saga_that_started_it() -> None:
    """The batch serves many messages: its log lines name the process's service, never
    the saga id of whichever handler happened to start it."""
    seen: list[dict[str, object]] = []

    class Recording(GatedStore):
        async def append_many(self, commits: Sequence[Commit]) -> list[Exception | None]:
            seen.append(structlog.contextvars.get_contextvars())
            return await super().append_many(commits)

    store = Recording()
    store.release.set()
    batcher = CommitBatcher(store=store)
    with structlog.contextvars.bound_contextvars(service="orchestrator", saga_id="s1"):
        await batcher.append(commit("s1"))

    assert seen == [{"service": "orchestrator"}]
