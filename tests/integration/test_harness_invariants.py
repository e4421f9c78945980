"""The harness's invariant checker over stored histories: each generic check is named in
the report when a saga's history breaks it, and holds for the same saga done right."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts import PaymentRefunded, RefundRefused
from orchestrator.dev.harness.invariants import CHECKS, GENERIC_CHECKS, check_invariants
from orchestrator.packs import SagaPack
from orchestrator.packs.order_fulfilment import order_fulfilment
from orchestrator.packs.order_return import ORDER_RETURN, PACK, order_return_v2
from orchestrator.saga.commits import Commit
from orchestrator.settings import Settings
from orchestrator.store.mongo import MongoSagaStore
from tests.unit.test_history_checks import (
    RID,
    command_after_end,
    refund_refused,
    taken_back,
    unanswered_step,
    wrong_compensation_order,
)

pytestmark = pytest.mark.integration

BARE = (SagaPack(name="order_return", definitions=(ORDER_RETURN,)),)
"""The return saga without its pack's own invariants: only the generic ones run."""


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[MongoSagaStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.require_mongodb_url(), tz_aware=True
    )
    yield MongoSagaStore(database=client[settings.database])
    await client.close()


async def stored(store: MongoSagaStore, saga_id: str, commits: list[Commit]) -> str:
    for commit in commits:
        await store.append(replace(commit, saga_id=saga_id))
    return saga_id


def database(store: MongoSagaStore) -> AsyncDatabase[dict[str, Any]]:
    return store.commits.database


async def test_each_broken_history_fails_its_named_check(store: MongoSagaStore) -> None:
    broken = {
        "compensation_order": await stored(store, "bad-order", wrong_compensation_order()),
        "no_command_after_end": await stored(store, "bad-end", command_after_end()),
        "steps_answered": await stored(store, "bad-step", unanswered_step()),
    }

    for check, saga_id in broken.items():
        report = await check_invariants(database(store), saga_ids=[saga_id], packs=BARE)
        assert not report.ok
        assert [c for c in report.names() if not report.passed(c)] == [check], report
        assert all(saga_id in v for v in report.violations)


async def test_a_sound_history_passes_every_check(store: MongoSagaStore) -> None:
    saga_id = await stored(store, "good", refund_refused().commits)

    report = await check_invariants(database(store), saga_ids=[saga_id], packs=BARE)

    assert report.ok, report
    assert report.outcomes == {"compensated": 1}
    assert all(report.passed(c) for c in GENERIC_CHECKS)
    assert report.names() == CHECKS


async def test_a_saga_of_an_unregistered_definition_fails_the_sagas_check(
    store: MongoSagaStore,
) -> None:
    saga_id = await stored(store, "unknown", refund_refused().commits)
    order_only = (SagaPack(name="other", definitions=(order_fulfilment(),)),)

    report = await check_invariants(database(store), saga_ids=[saga_id], packs=order_only)

    assert report.failures == {"sagas": 1}
    assert "unregistered order_return@v1" in report.violations[0]


async def test_a_v2_return_completed_without_its_refund_fails_the_refunds_check(
    store: MongoSagaStore,
) -> None:
    """The return pack's own check: a completed return is refunded exactly once (here
    its refund is missing), and a return parked on a refused refund moved no money
    (here it did)."""
    v2 = order_return_v2(timeout=10, max_sends=1)
    refunded = taken_back(v2).feed(PaymentRefunded(return_id=RID, refund_id="refund-1"))
    refused = taken_back(v2).feed(RefundRefused(return_id=RID, reason="too much"))
    completed = await stored(store, "done-v2", refunded.commits)
    parked = await stored(store, "parked-v2", refused.commits)
    db = database(store)
    await db["payment_authorizations"].insert_one(
        {"_id": "order-1", "status": "captured", "amount_cents": 1_000, "currency": "EUR"}
    )
    await db["payment_refunds"].insert_one(
        {
            "_id": "order-1",
            "refunds": {parked: 100},
            "refused": {},
            "cancelled": {},
            "reversed": {},
            "captured_cents": 1_000,
            "refundable_cents": 900,
            "currency": "EUR",
        }
    )

    report = await check_invariants(db, saga_ids=[completed, parked], packs=(PACK,))

    assert report.failures.get("refunds") == 2, report.violations
    assert f"return {completed} completed, refund None" in report.violations
    assert f"return {parked} parked on a refused refund, yet refunded 100" in report.violations
