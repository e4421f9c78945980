"""History retention: finished sagas past the cut-off are removed (with their read-side
rows, leaving a tombstone) while sagas run; nothing in flight or parked is touched."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.ops.retention import prune_history
from orchestrator.saga.state import Status
from tests.helpers import eventually, run_cli
from tests.integration.conftest import System, SystemFactory

pytestmark = pytest.mark.integration

DAYS_AGO_40 = int((datetime.now(UTC) - timedelta(days=40)).timestamp() * 1000)


async def finished_long_ago(system: System, saga_id: str) -> None:
    """Pretend the saga finished 40 days ago (its finishing commit's time)."""
    await system.client.store.commits.update_many(
        {"saga_id": saga_id, "finished_at": {"$gte": 0}}, {"$set": {"finished_at": DAYS_AGO_40}}
    )


async def old_finished_sagas(system: System) -> dict[str, Status]:
    """A completed, a failed and a compensated saga, finished 40 days ago."""
    limit = system.payment.payments.decline_above_cents
    sagas = {
        await system.order(("apple", 1)): Status.COMPLETED,
        await system.order(("unknown-sku", 1)): Status.FAILED,
        await system.order(("apple", 1), amount_cents=limit + 1): Status.COMPENSATED,
    }
    for saga_id, status in sagas.items():
        assert (await system.settle(saga_id)).status is status
        await finished_long_ago(system, saga_id)
    return sagas


async def test_prune_under_load_removes_only_old_finished_sagas(system: System) -> None:
    """Old completed/failed/compensated sagas go, with their read-side rows, and answer
    "pruned"; a recent one, an old one with parked work and 40 sagas started during
    the prune are untouched, and those 40 all complete."""
    await system.inventory.inventory.set_stock("apple", 100)
    store = system.client.store
    db = store.commits.database
    old = await old_finished_sagas(system)
    with_parked_work = await system.order(("apple", 1))
    await system.settle(with_parked_work)
    await finished_long_ago(system, with_parked_work)
    await store.commits.update_one(
        {"_id": f"{with_parked_work}:1"},
        {"$set": {"outbox_parked": "Unroutable: test", "parked_at": 1}},
    )
    recent = await system.order(("apple", 1))
    await system.settle(recent)
    everyone = [*old, with_parked_work, recent]
    await db["readside_sagas"].insert_many([{"_id": s, "status": "x"} for s in everyone])

    load = [asyncio.create_task(system.order(("apple", 1))) for _ in range(40)]
    report = await prune_history(
        store, db, older_than=timedelta(days=30), now=datetime.now(UTC), batch=2
    )
    in_flight = await asyncio.gather(*load)

    assert report.sagas == len(old)
    for saga_id in old:
        assert await store.history(saga_id) == []
        assert await store.pruned(saga_id)
    for saga_id in (with_parked_work, recent, *in_flight):
        assert await store.history(saga_id), saga_id
        assert not await store.pruned(saga_id)
    rows = {d["_id"] async for d in db["readside_sagas"].find({})}
    assert rows == {with_parked_work, recent}
    for saga_id in in_flight:
        assert (await system.settle(saga_id)).status is Status.COMPLETED


async def test_history_prune_command_counts_then_removes(system: System) -> None:
    """``--dry-run`` removes nothing; the real run removes exactly what it counted."""
    await system.inventory.inventory.set_stock("apple", 10)
    old = await old_finished_sagas(system)
    code, out, err = await run_cli(
        system.settings, "history", "prune", "--older-than", "30d", "--dry-run"
    )
    assert code == 0, err
    assert f"{len(old)} finished sagas would be pruned" in out
    assert all([await system.client.history(s) for s in old])

    code, out, err = await run_cli(system.settings, "history", "prune", "--older-than", "30d")
    assert code == 0, err
    assert f"pruned {len(old)} finished sagas" in out
    for saga_id in old:
        assert await system.client.history(saga_id) == []
        assert await system.client.store.pruned(saga_id)
    code, out, err = await run_cli(system.settings, "status", next(iter(old)))
    assert (code, err.strip()) == (1, f"saga {next(iter(old))} finished and its history was pruned")


async def test_the_orchestrator_prunes_by_itself_when_retention_is_set(
    make_system: SystemFactory,
) -> None:
    """``SAGA_RETENTION_DAYS=30``: the orchestrator's own loop removes a saga that
    finished 40 days ago and keeps one that just finished."""
    system = await make_system(
        extra={"SAGA_RETENTION_DAYS": "30", "SAGA_RETENTION_INTERVAL": "0.2"}
    )
    await system.inventory.inventory.set_stock("apple", 10)
    old, recent = await system.order(("apple", 1)), await system.order(("apple", 1))
    for saga_id in (old, recent):
        assert (await system.settle(saga_id)).status is Status.COMPLETED
    await finished_long_ago(system, old)
    store = system.client.store
    await eventually(lambda: store.pruned(old), what="the old saga pruned")
    assert await store.history(old) == []
    assert await store.history(recent)
