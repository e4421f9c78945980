"""Which sagas are stuck, and why, in words an operator can act on."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.saga.registry import SagaRegistry

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


def _waiting_for(summary: dict[str, Any], registry: SagaRegistry | None) -> str:
    step_name = summary.get("step")
    if not step_name:
        return "nothing (no current step)"
    name, version = summary.get("saga_name", ""), summary.get("saga_version")
    if registry is None or not registry.knows(name, version):
        return f"a reply to {step_name}"
    saga = registry.get(name, version)
    if not saga.has_step(step_name):
        return f"a reply to {step_name}"
    step = saga.step(step_name)
    if summary.get("status") == "compensating" and step.compensated is not None:
        return step.compensated.TYPE
    return step.success.TYPE


def _retrying(
    summary: dict[str, Any], registry: SagaRegistry | None, *, failing_for: timedelta
) -> str | None:
    """Words for a retriable step resent more than once, or None: which step, for how
    long since it began, and why (the last error stored, else the missing reply)."""
    name, version, step = (
        summary.get("saga_name", ""),
        summary.get("saga_version"),
        summary.get("step"),
    )
    attempt = int(summary.get("attempt") or 0)
    if registry is None or not step or attempt < 2 or not registry.knows(name, version):
        return None
    saga = registry.get(name, version)
    if not saga.has_step(step) or not saga.step(step).retriable:
        return None
    why = f"no reply after {attempt} of {saga.step(step).sends} sends"
    if summary.get("last_error"):
        why = f"{summary['last_error']} ({why})"
    return (
        f"{step} failing for {humanize(failing_for)}: {why}, "
        "resent with backoff (past the pivot: never compensated)"
    )


def stuck_reason(
    summary: dict[str, Any],
    *,
    now: datetime,
    threshold: timedelta,
    registry: SagaRegistry | None = None,
) -> str | None:
    """Why this saga is stuck, or None if it is terminal or healthy. With the registry,
    the reason names the reply awaited; a saga of a definition it does not know is
    reported by its step alone."""
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
    if status == "completing_stuck":
        return (
            f"{summary.get('step')} failing past the pivot, parked for {humanize(idle)}: "
            f"{summary.get('last_error') or 'no reason stored'}; it is never compensated: "
            f"fix the cause, then 'saga resume {summary['_id']}' retries it"
        )
    waiting = _waiting_for(summary, registry)
    since: datetime = summary.get("step_since") or updated
    retrying = _retrying(summary, registry, failing_for=now - since)
    if retrying and now - since >= threshold:
        return retrying
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
