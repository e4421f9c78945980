"""History seeding for ``saga bench --history``: clones of real finished sagas that the
system reads like its own and that retention can remove; pollers ignore them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.dev.bench.history import capture_templates, seed_history
from orchestrator.saga.state import Status
from tests.helpers import eventually
from tests.integration.conftest import System

pytestmark = pytest.mark.integration


async def test_seeded_history_reads_like_the_systems_own(system: System) -> None:
    """Two sagas run for real are cloned 60 times: each clone replays as a completed
    saga, every collection that held a template's documents holds the clones' too, no
    clone carries pending work, and the clones can be pruned."""
    await system.inventory.inventory.set_stock("apple", 10)
    templates_ids = [await system.order(("apple", 1)) for _ in range(2)]
    for saga_id in templates_ids:
        assert (await system.settle(saga_id)).status is Status.COMPLETED
    db = system.client.store.commits.database
    store = system.client.store
    await system.orchestrator.runtime.dispatcher.flush()
    await eventually(  # the templates' last outboxes published and flagged
        store.live_work,
        until=lambda w: (w.pending_outbox, w.active_deadlines) == (0, 0),
        what="templates done",
    )
    templates = await capture_templates(db, templates_ids)
    assert {"saga_commits", "inventory_reservations"} <= set(templates[0].docs)
    before = {name: await db[name].count_documents({}) for name in templates[0].docs}

    seeded = await seed_history(db, templates, 60, batch=50)

    assert seeded.sagas == 60
    for name, count in before.items():
        per_saga = len(templates[0].docs[name])
        assert await db[name].count_documents({}) == count + 60 * per_saga, name
    clone_ids = {d["saga_id"] async for d in db["saga_commits"].find({"version": 1})} - set(
        templates_ids
    )
    assert len(clone_ids) == 60
    for saga_id in list(clone_ids)[:5]:
        state = await store.load(saga_id)
        assert state.status is Status.COMPLETED
        assert state.data["order_id"].startswith("order-" + saga_id[:8])
    work = await store.live_work()
    assert (work.pending_outbox, work.active_deadlines) == (0, 0)
    page = await store.prunable(finished_before=datetime.now(UTC) + timedelta(seconds=1), limit=500)
    assert clone_ids <= {s.saga_id for s in page.sagas}
