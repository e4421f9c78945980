"""Building blocks of scenarios: checks over histories and counters, for any saga."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from orchestrator.dev.harness.scenario import Run, Verify
from orchestrator.saga.state import EventType, SagaEvent
from orchestrator.store.mongo import MongoSagaStore

__all__ = ["count_sagas", "every_saga", "fired", "has", "histories"]


async def histories(run: Run) -> dict[str, list[SagaEvent]]:
    """Every saga's events, oldest first."""
    store = MongoSagaStore(database=run.deployment.db)
    return {
        saga_id: [e for c in await store.history(saga_id) for e in c.events]
        for saga_id in run.saga_ids
    }


def fired(run: Run, action: str, *, exactly: int | None = None, least: int = 1) -> Verify:
    """A check that rules with ``action`` fired ``exactly`` (or at least ``least``) times."""

    async def check() -> list[str]:
        count = await run.fired(action)
        if exactly is not None and count != exactly:
            return [f"{action} fired {count} times, expected {exactly}"]
        if count < least:
            return [f"{action} fired {count} times, expected at least {least}"]
        return []

    return check


def every_saga(run: Run, what: str, ok: Callable[[list[SagaEvent]], bool]) -> Verify:
    """A check that ``ok(events)`` holds for every saga's history."""

    async def check() -> list[str]:
        bad = [s for s, events in (await histories(run)).items() if not ok(events)]
        return [f"{len(bad)} sagas did not {what}, e.g. {bad[0]}"] if bad else []

    return check


def has(kind: EventType, step: str) -> Callable[[list[SagaEvent]], bool]:
    """Events include one of ``kind`` for ``step``."""
    return lambda events: any(e.type is kind and e.step == step for e in events)


def count_sagas(
    run: Run, ok: Callable[[list[SagaEvent]], bool], what: str
) -> Callable[[], Awaitable[str | None]]:
    async def probe() -> str | None:
        done = sum(ok(events) for events in (await histories(run)).values())
        return None if done == len(run.saga_ids) else f"{done} of {len(run.saga_ids)} {what}"

    return probe
