"""The saga summary remembers when its current step began, so that the stuck report can
say how long a retriable step has been failing though every resend updates the summary."""

from __future__ import annotations

from datetime import timedelta

from contracts import ProgressEvent, SagaProgressed
from orchestrator.readside.summaries import fold
from tests.unit.saga_run import NOW


def progressed(version: int, step: str, *events: tuple[str, float]) -> SagaProgressed:
    return SagaProgressed(
        saga_name="order_fulfilment",
        saga_version=2,
        version=version,
        status="running",
        step=step,
        events=tuple(
            ProgressEvent(type=kind, at=NOW + timedelta(seconds=at), step=step)
            for kind, at in events
        ),
    )


def test_a_resend_keeps_the_time_the_step_began() -> None:
    begun = fold(None, "s-1", progressed(5, "capture_payment", ("step_started", 0)))
    resent = fold(begun, "s-1", progressed(6, "capture_payment", ("command_resent", 600)))

    assert begun["step_since"] == NOW
    assert resent["step_since"] == NOW
    assert resent["updated_at"] == NOW + timedelta(seconds=600)


def test_the_next_step_starts_its_own_clock() -> None:
    begun = fold(None, "s-1", progressed(5, "capture_payment", ("step_started", 0)))
    following = fold(begun, "s-1", progressed(6, "ship_stock", ("step_started", 30)))

    assert following["step_since"] == NOW + timedelta(seconds=30)
