"""Pending and parked work, in words an operator can act on.

An outbox that could not be published, or a deadline whose handling kept failing, is
parked after its attempts (``SAGA_OUTBOX_MAX_ATTEMPTS``, ``SAGA_DEADLINE_MAX_ATTEMPTS``)
and waits here: ``retry`` makes it pending again (the relay or the watcher takes it at
its next pass), ``drop`` forgets it for good. The live-set sizes are what ``/metrics``
and the stuck report show: backlog, never history. Used by the CLI (``saga outbox``),
the API and the UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily

from orchestrator.ops.stuck import humanize

if TYPE_CHECKING:
    from datetime import datetime

    from orchestrator.ports import ParkedWorkStore
    from orchestrator.saga.commits import LiveWork, ParkedWork, WorkKind

__all__ = [
    "StuckWork",
    "describe",
    "drop_parked",
    "live_work",
    "live_work_families",
    "live_work_line",
    "live_work_metrics",
    "retry_parked",
    "stuck_work",
]


@dataclass(frozen=True, kw_only=True)
class StuckWork:
    """One parked outbox or deadline, with the reason and what to do about it."""

    saga_id: str
    commit_id: str
    kind: WorkKind
    parked_at: datetime
    reason: str


def describe(parked: ParkedWork, *, now: datetime) -> str:
    """Why it is parked and the commands that retry or drop it."""
    what = (
        f"outbox ({', '.join(parked.messages) or 'no message'})"
        if parked.kind == "outbox"
        else "deadline"
    )
    return (
        f"{what} of version {parked.version} parked {humanize(now - parked.parked_at)} ago "
        f"after {parked.attempts} attempts: {parked.reason}; "
        f"'saga outbox retry {parked.commit_id}' or 'saga outbox drop {parked.commit_id}'"
    )


async def stuck_work(store: ParkedWorkStore, *, now: datetime, limit: int = 100) -> list[StuckWork]:
    """Parked work for the stuck report, oldest first."""
    return [
        StuckWork(
            saga_id=p.saga_id,
            commit_id=p.commit_id,
            kind=p.kind,
            parked_at=p.parked_at,
            reason=describe(p, now=now),
        )
        for p in await store.parked(limit=limit)
    ]


async def live_work(store: ParkedWorkStore, *, cap: int = 100_000) -> LiveWork:
    """The sizes of the live sets (pending outboxes, armed deadlines, parked work)."""
    return await store.live_work(cap=cap)


def live_work_metrics(work: LiveWork, *, prefix: str = "saga") -> dict[str, int]:
    """The live-set sizes as gauge names and values (``saga_outbox_pending`` ...)."""
    return {
        f"{prefix}_outbox_pending": work.pending_outbox,
        f"{prefix}_deadlines_active": work.active_deadlines,
        f"{prefix}_outbox_parked": work.parked_outbox,
        f"{prefix}_deadlines_parked": work.parked_deadlines,
    }


LIVE_WORK_HELP = {
    "outbox_pending": "Commits whose outbox is not yet published (the relay's live set).",
    "deadlines_active": "Armed step deadlines (the deadline watcher's live set).",
    "outbox_parked": "Outboxes parked after their attempts, waiting for an operator.",
    "deadlines_parked": "Deadlines parked after their attempts, waiting for an operator.",
}


def live_work_families(work: LiveWork, *, prefix: str = "saga") -> list[GaugeMetricFamily]:
    """The live-set sizes as Prometheus gauges (``saga_outbox_pending`` ...); a value equal
    to ``cap`` means at least that many."""
    families = []
    for name, value in live_work_metrics(work, prefix=prefix).items():
        family = GaugeMetricFamily(name, LIVE_WORK_HELP[name.removeprefix(f"{prefix}_")])
        family.add_metric([], value)
        families.append(family)
    return families


def live_work_line(work: LiveWork) -> str:
    """The live-set sizes in one line, for the stuck report."""

    def n(value: int) -> str:
        return f"{value}+" if value >= work.cap else str(value)

    return (
        f"pending outboxes: {n(work.pending_outbox)}, armed deadlines: "
        f"{n(work.active_deadlines)}, parked outboxes: {n(work.parked_outbox)}, "
        f"parked deadlines: {n(work.parked_deadlines)}"
    )


async def retry_parked(
    store: ParkedWorkStore, commit_id: str, *, now: datetime, kind: WorkKind | None = None
) -> list[WorkKind]:
    """Make the commit's parked work pending again; returns what was parked."""
    return await store.retry_parked(commit_id, now=now, kind=kind)


async def drop_parked(
    store: ParkedWorkStore, commit_id: str, *, kind: WorkKind | None = None
) -> list[WorkKind]:
    """Forget the commit's parked work for good; returns what was dropped."""
    return await store.drop_parked(commit_id, kind=kind)
