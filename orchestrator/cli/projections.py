"""``saga sagas | stuck | projections rebuild``: the read side from a terminal."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Column, Table

from orchestrator.client import SagaClient
from orchestrator.ops.stuck import humanize, stuck_reason
from orchestrator.ops.work import live_work, live_work_line, stuck_work
from orchestrator.readside import SagaSummaries, extensions_of, rebuild_projections
from orchestrator.readside.summaries import UNSETTLED as IN_FLIGHT
from orchestrator.settings import Settings

__all__ = ["register"]


def parse_duration(text: str) -> timedelta:
    """``90s``, ``10m``, ``3h``, ``2d`` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text and text[-1] in units:
            return timedelta(seconds=float(text[:-1]) * units[text[-1]])
        return timedelta(seconds=float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 10m, 3h") from None


async def cmd_sagas(settings: Settings, args: argparse.Namespace) -> int:
    """List saga summaries."""
    async with SagaClient(settings, name="cli") as client:
        summaries = SagaSummaries(database=client.store.commits.database)
        docs = await summaries.find(
            status=args.status or (IN_FLIGHT if args.in_flight else ()),
            step=args.step,
            older_than=args.older_than,
            now=datetime.now(UTC),
            limit=args.limit,
            saga_name=args.saga,
            saga_version=args.version,
        )
    table = Table(
        Column("saga", no_wrap=True),
        "definition",
        "status",
        "step",
        "updated",
        "attempt",
        "last error",
    )
    now = datetime.now(UTC)
    for d in docs:
        table.add_row(
            d["_id"],
            f"{d.get('saga_name', '')}@v{d.get('saga_version', 1)}",
            d["status"],
            d.get("step") or "",
            humanize(now - d["updated_at"]) + " ago",
            str(d.get("attempt", "")),
            (d.get("last_error") or "")[:60],
        )
    Console().print(table)
    if args.in_flight or args.version is not None:
        print(f"{len(docs)} saga{'s' if len(docs) != 1 else ''} listed (limit {args.limit})")
    return 0


async def cmd_stuck(settings: Settings, args: argparse.Namespace) -> int:
    """List parked outboxes and deadlines, then stuck sagas, each with the reason and
    what to do; exit 1 if there are any (for scripts)."""
    now = datetime.now(UTC)
    found = []
    async with SagaClient(settings, name="cli") as client:
        print(live_work_line(await live_work(client.store)))
        for work in await stuck_work(client.store, now=now, limit=args.limit):
            found.append((work.saga_id, f"{work.kind} parked", work.reason))
        summaries = SagaSummaries(database=client.store.commits.database)
        for summary in await summaries.stuck(idle_before=now - args.threshold, limit=args.limit):
            reason = stuck_reason(
                summary, now=now, threshold=args.threshold, registry=settings.registry()
            )
            if reason:
                found.append((summary["_id"], summary["status"], reason))
    if not found:
        print(f"no stuck sagas (threshold {humanize(args.threshold)})")
        return 0
    found = found[: args.limit]
    table = Table(
        Column("saga", no_wrap=True), "status", "why", title=f"{len(found)} stuck (sagas and work)"
    )
    for row in found:
        table.add_row(*row)
    Console().print(table)
    return 1


async def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    """Rebuild every projection from the event store, with a progress bar."""
    del args
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    async with SagaClient(settings, name="cli") as client:
        with Progress(*columns) as bar:
            task = bar.add_task("rebuilding projections", total=None)
            database = client.store.commits.database
            count = await rebuild_projections(
                database,
                extensions=extensions_of(settings, database),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    print(f"rebuilt the projections of {count} sagas")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the read-side commands."""
    sagas = sub.add_parser("sagas", help="list sagas (read side), filtered")
    sagas.add_argument(
        "--status",
        action="append",
        help="running, compensating, completed, failed, compensated, "
        "compensation_failed, completing_stuck (repeatable)",
    )
    sagas.add_argument("--step")
    sagas.add_argument("--saga", help="only sagas of this definition, e.g. order_fulfilment")
    sagas.add_argument(
        "--version", type=int, help="only sagas running on this version of their definition"
    )
    sagas.add_argument(
        "--in-flight", action="store_true",
        help="only sagas not yet completed, failed or compensated (parked ones included)",
    )  # fmt: skip
    sagas.add_argument("--older-than", type=parse_duration, help="started before, e.g. 1h")
    sagas.add_argument("--limit", type=int, default=50)
    sagas.set_defaults(run=cmd_sagas)

    stuck = sub.add_parser("stuck", help="list stuck sagas and why")
    stuck.add_argument(
        "--threshold",
        type=parse_duration,
        default=timedelta(minutes=10),
        help="no progress for this long counts as stuck (default 10m)",
    )
    stuck.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    stuck.set_defaults(run=cmd_stuck)

    projections = sub.add_parser("projections", help="read-side maintenance")
    actions = projections.add_subparsers(dest="action", required=True)
    rebuild = actions.add_parser(
        "rebuild",
        help="rebuild every projection from the events (stop the read side first)",
    )
    rebuild.set_defaults(run=cmd_rebuild)
