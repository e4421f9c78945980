"""Counting what a run cost: broker messages per namespace, the read side's backlog,
and the notes that qualify the numbers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.bench.management import Management, ManagementUnavailable

if TYPE_CHECKING:
    from orchestrator.bench.baseline import RawTopology
    from orchestrator.bench.results import BenchReport, LevelResult
    from orchestrator.bench.system import BenchSystem

__all__ = [
    "backlog",
    "baseline_exchanges",
    "count_publishes",
    "notes",
    "outbox_estimate",
    "system_exchanges",
]


def backlog(management: Management, system: BenchSystem) -> dict[str, int] | str:
    """Messages waiting in the read side's queues (they pile up when it does not run)."""
    try:
        return management.queue_depths(system.read_side_queues())
    except ManagementUnavailable as e:
        return f"unknown: {e}"


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


async def count_publishes(
    management: Management, exchanges: list[str], levels: list[LevelResult]
) -> dict[str, Any]:
    """The broker's count of what was published to ``exchanges`` (see
    :meth:`Management.settled_publishes`), or why it is unknown."""
    at_least = sum(_minimum_messages(r.all_outcomes) for r in levels)
    try:
        publishes = await management.settled_publishes(exchanges, at_least=at_least)
    except ManagementUnavailable as e:
        return {"error": str(e)}
    return {"publishes": publishes, "source": "RabbitMQ management API: exchanges' publish_in"}


def outbox_estimate(sagas: int, outbox: Mapping[str, int]) -> int:
    """What the commits say was sent: the starts, every stored command and its reply,
    every stored event."""
    return sagas + 2 * outbox.get("command", 0) + outbox.get("event", 0)


def _minimum_messages(outcomes: Mapping[str, int]) -> int:
    """The fewest publishes these sagas can have caused (8 for a completed one)."""
    return 8 * outcomes.get("completed", 0) + 4 * outcomes.get("failed", 0)


def notes(report: BenchReport, *, saga_timeout: float, profiled: bool) -> list[str]:
    """What qualifies the numbers: sagas that never settled, a read-side backlog, a
    profiler slowing the services down."""
    found = []
    timeouts = sum(r.all_outcomes.get("timeout", 0) for r in report.system)
    if timeouts:
        found.append(f"{timeouts} system sagas did not settle within {saga_timeout:g}s")
    waiting = report.messages.get("read_side_backlog")
    if isinstance(waiting, dict) and sum(waiting.values()):
        found.append(
            f"{sum(waiting.values())} messages were waiting in the read-side queues (each "
            "progress event is copied to 4): the read side did not run (--read-side) or fell "
            "behind"
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
