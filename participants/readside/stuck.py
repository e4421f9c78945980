"""Which sagas are stuck, and why, in words an operator can act on."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from orchestrator.definition import SagaDefinition
from orchestrator.order_saga import ORDER_FULFILMENT

__all__ = ["humanize", "stuck_reason"]

TERMINAL = ("completed", "failed", "compensated")


def humanize(delta: timedelta) -> str:
    """3h 2m, 45s, 2d 4h."""
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0s"


def _waiting_for(summary: dict[str, Any], saga: SagaDefinition) -> str:
    step_name = summary.get("step")
    if not step_name:
        return "nothing (no current step)"
    try:
        step = saga.step(step_name)
    except KeyError:
        return f"a reply to {step_name}"
    if summary.get("status") == "compensating" and step.compensated is not None:
        return step.compensated.TYPE
    return step.success.TYPE


def stuck_reason(
    summary: dict[str, Any],
    *,
    now: datetime,
    threshold: timedelta,
    saga: SagaDefinition = ORDER_FULFILMENT,
) -> str | None:
    """Why this saga is stuck, or None if it is terminal or healthy."""
    status = summary.get("status")
    if status in TERMINAL:
        return None
    updated: datetime = summary["updated_at"]
    idle = now - updated
    if status == "compensation_failed":
        return (
            f"parked at {summary.get('step')} for {humanize(idle)}: "
            f"{summary.get('last_error') or 'no reason stored'}; "
            f"resume with 'saga resume {summary['_id']}'"
        )
    waiting = _waiting_for(summary, saga)
    deadline: datetime | None = summary.get("deadline")
    if deadline is None:
        return f"waiting for {waiting} for {humanize(idle)}, no deadline armed"
    if idle < threshold:
        return None
    if deadline <= now:
        return (
            f"waiting for {waiting} for {humanize(idle)}; its deadline passed "
            f"{humanize(now - deadline)} ago and nothing happened "
            "(is an orchestrator running?)"
        )
    return (
        f"waiting for {waiting} for {humanize(idle)}, no progress "
        f"(deadline in {humanize(deadline - now)})"
    )
