"""``saga history prune --older-than 30d [--dry-run]``: remove finished sagas."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from orchestrator.cli.projections import parse_duration
from orchestrator.client import SagaClient
from orchestrator.ops.retention import prune_history, saga_keyed_collections
from orchestrator.settings import Settings

__all__ = ["register"]


async def cmd_prune(settings: Settings, args: argparse.Namespace) -> int:
    """Remove (or count, with --dry-run) the sagas that finished before the cut-off,
    with the read side's rows about them; a tombstone of each stays."""
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    verb = "counting" if args.dry_run else "pruning"
    async with SagaClient(settings, name="cli") as client:
        with Progress(*columns) as bar:
            task = bar.add_task(f"{verb} finished sagas", total=None)
            report = await prune_history(
                client.store,
                client.store.commits.database,
                older_than=args.older_than,
                now=datetime.now(UTC),
                batch=args.batch,
                dry_run=args.dry_run,
                collections=saga_keyed_collections(settings.packs()),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    if report.dry_run:
        print(f"{report.sagas} finished sagas would be pruned (nothing removed)")
    else:
        print(f"pruned {report.sagas} finished sagas ({report.commits} commits)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``saga history``."""
    history = sub.add_parser("history", help="saga history maintenance (retention)")
    actions = history.add_subparsers(dest="action", required=True)
    prune = actions.add_parser(
        "prune",
        help="remove completed, failed and compensated sagas finished before a cut-off "
        "(parked and running sagas are never removed)",
    )
    prune.add_argument("--older-than", type=parse_duration, required=True, help="e.g. 30d, 12h")
    prune.add_argument("--dry-run", action="store_true", help="count, remove nothing")
    prune.add_argument("--batch", type=int, default=500, help="sagas per batch (500)")
    prune.set_defaults(run=cmd_prune)
