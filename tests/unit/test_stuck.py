"""The stuck report's words for sagas past the pivot."""

from __future__ import annotations

from datetime import timedelta

from orchestrator.ops.stuck import stuck_reason
from orchestrator.saga.registry import SagaRegistry
from tests.unit.saga_run import NOW
from tests.unit.toy_saga import toy_saga

REGISTRY = SagaRegistry([toy_saga(2)])


def _summary(**fields: object) -> dict[str, object]:
    return {
        "_id": "s-1",
        "saga_name": "toy",
        "saga_version": 1,
        "updated_at": NOW - timedelta(minutes=12),
        "deadline": NOW + timedelta(seconds=30),
        **fields,
    }


def test_a_stuck_completion_says_which_step_fails_since_when_and_how_to_resume() -> None:
    summary = _summary(
        status="completing_stuck", step="settle", last_error="no reply", deadline=None
    )

    reason = stuck_reason(summary, now=NOW, threshold=timedelta(minutes=10), registry=REGISTRY)

    assert reason == (
        "settle failing past the pivot, parked for 12m: no reply; it is never compensated: "
        "fix the cause, then 'saga resume s-1' retries it"
    )


def test_a_retriable_step_resent_again_and_again_is_reported_as_failing() -> None:
    summary = _summary(status="running", step="settle", attempt=3)

    reason = stuck_reason(summary, now=NOW, threshold=timedelta(minutes=10), registry=REGISTRY)

    assert reason == (
        "settle failing for 12m: no reply after 3 of 4 sends, resent with backoff "
        "(past the pivot: never compensated)"
    )


def test_a_retriable_step_resent_a_minute_ago_counts_as_failing_since_it_began() -> None:
    """Every resend updates the summary, so the time since the step began is what says
    how long it has been failing, and the last error stored says why."""
    summary = _summary(
        status="running",
        step="settle",
        attempt=3,
        updated_at=NOW - timedelta(minutes=1),
        step_since=NOW - timedelta(minutes=12),
        last_error="payment store unavailable",
    )

    reason = stuck_reason(summary, now=NOW, threshold=timedelta(minutes=10), registry=REGISTRY)

    assert reason == (
        "settle failing for 12m: payment store unavailable (no reply after 3 of 4 sends), "
        "resent with backoff (past the pivot: never compensated)"
    )


def test_a_retriable_step_on_its_first_send_is_only_waited_for() -> None:
    summary = _summary(status="running", step="settle", attempt=1)

    reason = stuck_reason(summary, now=NOW, threshold=timedelta(minutes=10), registry=REGISTRY)

    assert reason is not None
    assert reason.startswith("waiting for settle.settle_done.v1 for 12m")
