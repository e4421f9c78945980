"""``saga outbox list | retry | drop``: parked outboxes and deadlines, and the backlog."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Column, Table

from orchestrator.client import SagaClient
from orchestrator.ops.stuck import humanize
from orchestrator.ops.work import drop_parked, live_work, retry_parked
from orchestrator.settings import Settings

__all__ = ["register"]


async def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    """The live-set sizes, then the parked work with reasons; exit 1 if any is parked."""
    now = datetime.now(UTC)
    async with SagaClient(settings, name="cli") as client:
        work = await live_work(client.store)
        parked = await client.store.parked(limit=args.limit)
    print(
        f"pending outboxes: {work.pending_outbox}, armed deadlines: {work.active_deadlines}, "
        f"parked outboxes: {work.parked_outbox}, parked deadlines: {work.parked_deadlines}"
    )
    if not parked:
        return 0
    table = Table(
        Column("commit", no_wrap=True), "kind", "parked", "attempts", "messages", "reason"
    )
    for p in parked:
        table.add_row(
            p.commit_id,
            p.kind,
            humanize(now - p.parked_at) + " ago",
            str(p.attempts),
            ", ".join(p.messages),
            p.reason,
        )
    Console().print(table)
    return 1


async def cmd_retry(settings: Settings, args: argparse.Namespace) -> int:
    """Make a commit's parked work pending again."""
    async with SagaClient(settings, name="cli") as client:
        kinds = await retry_parked(
            client.store, args.commit_id, now=datetime.now(UTC), kind=args.only
        )
    if not kinds:
        print(f"nothing parked on {args.commit_id}")
        return 1
    print(f"{args.commit_id}: {' and '.join(kinds)} pending again")
    return 0


async def cmd_drop(settings: Settings, args: argparse.Namespace) -> int:
    """Forget a commit's parked work for good."""
    async with SagaClient(settings, name="cli") as client:
        kinds = await drop_parked(client.store, args.commit_id, kind=args.only)
    if not kinds:
        print(f"nothing parked on {args.commit_id}")
        return 1
    print(f"{args.commit_id}: {' and '.join(kinds)} dropped (the history keeps the commit)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``saga outbox``."""
    outbox = sub.add_parser(
        "outbox", help="parked outboxes and deadlines: list, retry, drop", description=__doc__
    )
    actions = outbox.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="backlog sizes and parked work (exit 1 if any)")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(run=cmd_list)
    for name, run, text in (
        ("retry", cmd_retry, "make parked work pending again"),
        ("drop", cmd_drop, "forget parked work for good"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("commit_id", help="<saga id>:<version>, as 'saga outbox list' shows")
        action.add_argument("--only", choices=("outbox", "deadline"), default=None)
        action.set_defaults(run=run)
