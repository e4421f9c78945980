"""Counting what a run cost: broker messages per namespace (less what was sent before
measuring), the event queues' backlog, and the notes that qualify the numbers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orchestrator.dev.bench.management import Management, ManagementUnavailable

if TYPE_CHECKING:
    from orchestrator.dev.bench.baseline import RawTopology
    from orchestrator.dev.bench.results import BenchReport, LevelResult, StoreOps
    from orchestrator.dev.bench.system import BenchSystem


__all__ = [
    "BeforeMeasuring",
    "backlog",
    "baseline_exchanges",
    "before_measuring",
    "count_messages",
    "count_publishes",
    "notes",
    "outbox_estimate",
    "publishes_so_far",
    "saga_path_estimate",
    "system_exchanges",
]


@dataclass(frozen=True, kw_only=True)
class BeforeMeasuring:
    """Where measuring began: the time, the store commands, the broker's publishes (so
    that the run's counts leave a workload's preparation and ``--history`` out)."""

    at: datetime
    store: StoreOps
    publishes: int | str
    """Publishes to the system's exchanges so far, or why they are unknown."""
    baseline_publishes: int | str = 0
    """Likewise for the baseline's exchanges (not 0 once ``--history`` measured the
    empty store)."""


async def before_measuring(
    system: BenchSystem,
    management: Management,
    *,
    asked: bool,
    baseline: RawTopology | None = None,
) -> BeforeMeasuring:
    """Now, as the counts stand. The broker reports its counts every few seconds, so it
    is asked (and waited for) only if ``asked``: when the preparation ran sagas; the
    ``baseline``'s too if given (its levels ran before)."""
    publishes = await publishes_so_far(management, system_exchanges(system)) if asked else 0
    raw = (
        await publishes_so_far(management, baseline_exchanges(baseline))
        if asked and baseline is not None
        else 0
    )
    return BeforeMeasuring(
        at=datetime.now(UTC), store=system.store_ops(), publishes=publishes, baseline_publishes=raw
    )


async def count_messages(
    system: BenchSystem,
    raw: RawTopology | None,
    report: BenchReport,
    management: Management,
    before: BeforeMeasuring,
) -> dict[str, Any]:
    """The broker's counts per target since ``before``, and what waits in the system's
    event queues. Call it while every publisher's channel is still open."""
    per_saga = report.expected_messages or 4
    work = [
        count_publishes(
            management,
            system_exchanges(system),
            report.system,
            per_saga=per_saga,
            before=before.publishes,
        )
    ]
    if raw is not None:
        exchanges = baseline_exchanges(raw)
        work.append(
            count_publishes(
                management,
                exchanges,
                report.baseline,
                per_saga=per_saga,
                before=before.baseline_publishes,
            )
        )
    counts = await asyncio.gather(*work)
    counted: dict[str, Any] = {"system": counts[0]}
    if raw is not None:
        started = sum(r.started for r in report.baseline)
        counted["baseline"] = {**counts[1], "by_construction": raw.plan.messages_per_saga * started}
    counted["event_queue_backlog"] = backlog(management, system)
    return counted


def backlog(management: Management, system: BenchSystem) -> dict[str, int] | str:
    """Messages waiting in the event queues: the read side's pile up when it does not
    run; the participants' should be empty."""
    try:
        depths = management.queue_depths(system.event_queues())
    except ManagementUnavailable as e:
        return f"unknown: {e}"
    return {name: n for name, n in depths.items() if n}


def system_exchanges(system: BenchSystem) -> list[str]:
    """Every exchange the system publishes to."""
    topology = system.settings.topology()
    return [
        topology.commands_exchange,
        topology.replies_exchange,
        topology.events_exchange,
        topology.control_exchange,
    ]


def baseline_exchanges(raw: RawTopology) -> list[str]:
    """Every exchange the baseline publishes to."""
    return [raw.commands, raw.replies, raw.events]


async def publishes_so_far(management: Management, exchanges: list[str]) -> int | str:
    """The broker's count of what was published to ``exchanges`` until now, once its
    statistics settled; or why it is unknown."""
    try:
        return await management.settled_publishes(exchanges, at_least=0)
    except ManagementUnavailable as e:
        return str(e)


async def count_publishes(
    management: Management,
    exchanges: list[str],
    levels: list[LevelResult],
    *,
    per_saga: int,
    before: int | str = 0,
) -> dict[str, Any]:
    """The broker's count of what was published to ``exchanges`` (see
    :meth:`Management.settled_publishes`) since ``before`` were, or why it is unknown.
    ``per_saga`` is what a completed saga sends at least."""
    if isinstance(before, str):
        return {"error": f"what was published before measuring is unknown: {before}"}
    at_least = before + sum(_minimum_messages(r.all_outcomes, per_saga) for r in levels)
    try:
        publishes = await management.settled_publishes(exchanges, at_least=at_least)
    except ManagementUnavailable as e:
        return {"error": str(e)}
    return {
        "publishes": publishes - before,
        "before_measuring": before,
        "source": "RabbitMQ management API: exchanges' publish_in",
    }


def outbox_estimate(sagas: int, outbox: Mapping[str, int]) -> int:
    """What the commits say was sent: the starts, every stored command and its reply,
    every stored event."""
    return sagas + 2 * outbox.get("command", 0) + outbox.get("event", 0)


def saga_path_estimate(sagas: int, outbox: Mapping[str, int]) -> int:
    """What the commits say was sent, progress events left out: the broker counts those
    as fewer messages when they are batched (``SAGA_PROGRESS_BATCH``)."""
    return outbox_estimate(sagas, outbox) - outbox.get("progress", 0)


def _minimum_messages(outcomes: Mapping[str, int], per_saga: int) -> int:
    """The fewest publishes these sagas can have caused (``per_saga`` for a completed
    one, a start, a command, its reply and the outcome for a failed one)."""
    return per_saga * outcomes.get("completed", 0) + 4 * outcomes.get("failed", 0)


def notes(report: BenchReport, *, saga_timeout: float, profiled: bool) -> list[str]:
    """What qualifies the numbers: sagas that never settled, a read-side backlog, a
    profiler slowing the services down."""
    found = []
    timeouts = sum(r.all_outcomes.get("timeout", 0) for r in report.system)
    if timeouts:
        found.append(f"{timeouts} system sagas did not settle within {saga_timeout:g}s")
    waiting = report.messages.get("event_queue_backlog")
    if isinstance(waiting, dict) and sum(waiting.values()):
        where = ", ".join(f"{name} {n}" for name, n in sorted(waiting.items()))
        found.append(
            f"{sum(waiting.values())} messages were waiting in event queues at the end "
            f"({where}): their consumers did not run (the read side runs with --read-side) "
            "or fell behind"
        )
    for level in (*report.system, *report.baseline):
        if level.other_load > 0.1:
            found.append(
                f"{level.target} at {level.concurrency} in flight: other processes used "
                f"{level.other_load:.2f} CPUs during the window; the numbers are pessimistic"
            )
    if profiled:
        found.append("the services ran under pyinstrument: rates are lower than without it")
    return found
