"""``saga dlq list | show | replay | discard``: dead-letter queues from a terminal.

QUEUE names a dead-letter queue or the work queue it belongs to, with or without the
namespace: ``payment.commands`` means ``<namespace>.payment.commands.dlq``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

from rich import progress as bars
from rich.console import Console

from orchestrator.messaging.bus import Bus
from orchestrator.ops import (
    DeadLetter,
    DlqError,
    DlqReport,
    Progress,
    Selector,
    UnknownQueue,
    discard,
    list_dead_letters,
    peek,
    replay,
    resolve_queue,
)
from orchestrator.store.connect import connect_mongo

if TYPE_CHECKING:
    from orchestrator.messaging.topology import WorkQueue
    from orchestrator.settings import Settings

__all__ = ["register"]

DESCRIPTION = """\
Dead-letter queues: messages parked after their last attempt, or malformed.

QUEUE names a dead-letter queue or the work queue it belongs to, with or without
the namespace: payment.commands means <namespace>.payment.commands.dlq.
"""
LISTED_OUTCOMES = 50
"""A replay or discard lists each message up to this many; beyond, only the failures."""


async def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    """Print every dead-letter queue with its depth."""
    async with _bus(settings) as bus:
        queues = await list_dead_letters(bus)
    if args.json:
        print(json.dumps([vars(q) for q in queues], indent=2))
        return 0
    width = max(len(q.name) for q in queues)
    print(f"{'DEAD-LETTER QUEUE':<{width}}  {'MESSAGES':>8}  PARKED FROM THE QUEUE OF")
    for q in queues:
        print(f"{q.name:<{width}}  {q.messages:>8}  {q.purpose}")
    print(f"{'total':<{width}}  {sum(q.messages for q in queues):>8}")
    return 0


async def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    """Print dead letters (headers and body) without removing them."""
    work = _work_queue(settings, args.queue)
    selector = _selector(args, required=False)
    if work is None or selector is None:
        return 2
    async with _bus(settings) as bus:
        letters = await peek(bus, work.dlq, selector=selector, limit=args.limit)
        depth = next(q.messages for q in await list_dead_letters(bus) if q.name == work.dlq)
    if args.json:
        print(json.dumps([letter.to_dict() for letter in letters], indent=2, default=str))
        return 0
    print(f"{work.dlq}: {_n(depth, 'message')}; showing {len(letters)} ({selector})")
    for number, letter in enumerate(letters, 1):
        print()
        print("\n".join(_letter_lines(number, letter)))
    return 0


async def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    """Send dead letters back to their work queue (or original exchange) to be retried."""
    work = _work_queue(settings, args.queue)
    selector = _selector(args, required=True)
    if work is None or selector is None:
        return 2
    async with _bus(settings) as bus:
        with _progress_bar(f"replaying {work.dlq}", enabled=not args.dry_run) as progress:
            report = await replay(
                bus,
                work.dlq,
                selector=selector,
                dry_run=args.dry_run,
                rate_per_second=args.rate,
                target="original" if args.to == "original" else "work_queue",
                progress=progress,
            )
    return _print_report(report, everything=selector.everything)


async def cmd_discard(settings: Settings, args: argparse.Namespace) -> int:
    """Remove dead letters for good, each recorded with the reason in ``dlq_discards``."""
    work = _work_queue(settings, args.queue)
    selector = _selector(args, required=True)
    if work is None or selector is None:
        return 2
    if not args.reason.strip():
        print("error: --reason must say why these messages are discarded", file=sys.stderr)
        return 2
    async with _bus(settings) as bus:
        mongo = await connect_mongo(
            settings.require_mongodb_url(),
            app_name=bus.name,
            **settings.mongodb_options(),
        )
        try:
            with _progress_bar(f"discarding {work.dlq}", enabled=not args.dry_run) as progress:
                report = await discard(
                    bus,
                    work.dlq,
                    selector=selector,
                    reason=args.reason,
                    database=mongo[settings.database],
                    actor=_operator(),
                    dry_run=args.dry_run,
                    progress=progress,
                )
        finally:
            await mongo.close()
    return _print_report(report, everything=selector.everything)


def _letter_lines(number: int, letter: DeadLetter) -> list[str]:
    """One readable block per dead letter."""
    h = letter.headers
    contract = "valid" if letter.problem is None else f"INVALID: {letter.problem}"
    death = letter.death
    if death is not None and "x-error-reason" not in h:  # parked by the broker itself
        keys = ", ".join(map(str, death.get("routing-keys") or []))
        facts = [
            f"  reason     {letter.reason}: {letter.reason_text}",
            f"  deliveries {death.get('count')}",
            f"  from       {death.get('exchange') or '(default exchange)'} / {keys}",
            f"  failed     {death.get('time')}",
        ]
    else:
        facts = [
            f"  reason     {letter.reason}  ({h.get('x-error-type')}: {h.get('x-error-message')})",
            f"  attempts   {h.get('x-attempt')}",
            f"  from       {h.get('x-original-exchange')} / {h.get('x-original-routing-key')}",
            f"  failed     first {h.get('x-first-failure-at')}, last {h.get('x-last-failure-at')}",
        ]
    return [
        f"── {number} ── message {letter.message_id}  ({letter.type})",
        f"  saga id    {letter.saga_id}",
        *facts,
        f"  contract   {contract}",
        "  headers",
        *(f"    {k}: {json.dumps(v, default=str)}" for k, v in sorted(h.items())),
        f"  body ({letter.body_format}{': ' + letter.body_note if letter.body_note else ''})",
        *(f"    {line}" for line in letter.body_text.splitlines()),
    ]


def _print_report(report: DlqReport, *, everything: bool) -> int:
    """Print what was done; the exit code: 0 done, 1 a failure or nothing selected."""
    verb = "replay" if report.action == "replay" else "discard"
    failed = [o for o in report.outcomes if o.status == "failed"]
    shown = report.outcomes if len(report.outcomes) <= LISTED_OUTCOMES else failed
    for o in shown:
        mark = {"done": f"{verb}ed", "would": f"would {verb}", "failed": "FAILED"}[o.status]
        print(f"  {mark:<14} {o.message_id}  {o.type}  saga {o.saga_id}  {o.detail}".rstrip())
    handled = report.count("would" if report.dry_run else "done")
    done = f"dry run: would {verb}" if report.dry_run else f"{verb}ed"
    total = _n(report.depth, "message")
    print(f"{done} {handled} of {total} in {report.queue} ({report.selector})")
    if failed:
        left = report.depth - report.scanned
        print(
            f"error: {len(failed)} failed and stay in {report.queue}; stopped there "
            f"({left} not looked at)",
            file=sys.stderr,
        )
        return 1
    if not report.outcomes and not everything:
        print(f"error: no message in {report.queue} matches {report.selector}", file=sys.stderr)
        return 1
    return 0


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _work_queue(settings: Settings, name: str) -> WorkQueue | None:
    """The work queue of the dead-letter queue ``name``, or None (the error printed)."""
    try:
        return resolve_queue(settings.topology(), name)
    except UnknownQueue as e:
        print(
            f"error: no dead-letter queue {name!r} in namespace {settings.namespace!r}; "
            "known:\n  " + "\n  ".join(e.known),
            file=sys.stderr,
        )
        return None


def _selector(args: argparse.Namespace, *, required: bool) -> Selector | None:
    """The selection the options make, or None (the error printed)."""
    criteria = {
        "message_id": args.message_id,
        "saga_id": args.saga_id,
        "type": args.type,
        "reason": args.error_reason,
    }
    everything = getattr(args, "all", False) or (not required and not any(criteria.values()))
    try:
        return Selector(everything=everything, **criteria)
    except DlqError:
        print(
            "error: choose the messages: --all, or one or more of --message-id, --saga-id, "
            "--type, --error-reason (not both)",
            file=sys.stderr,
        )
        return None


@asynccontextmanager
async def _bus(settings: Settings) -> AsyncIterator[Bus]:
    bus = Bus.of(settings, name=f"{settings.namespace}.cli")
    await bus.connect(timeout=10)
    try:
        yield bus
    finally:
        await bus.close()


@contextmanager
def _progress_bar(description: str, *, enabled: bool) -> Iterator[Progress | None]:
    """A progress bar on stderr (stdout keeps the report), fed by the operation."""
    if not enabled:
        yield None
        return
    with bars.Progress(
        bars.TextColumn("{task.description}"),
        bars.BarColumn(),
        bars.MofNCompleteColumn(),
        bars.TimeElapsedColumn(),
        bars.TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in some containers
        return "unknown"


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _add_selection(parser: argparse.ArgumentParser, *, with_all: bool) -> None:
    if with_all:
        parser.add_argument("--all", action="store_true", help="every message in the queue")
    parser.add_argument("--message-id", help="the message with this id")
    parser.add_argument("--saga-id", help="the messages of this saga (correlation id)")
    parser.add_argument("--type", help="messages of this type, e.g. payment.authorize_payment.v1")
    parser.add_argument(
        "--error-reason",
        metavar="REASON",
        help="messages parked for this reason (x-error-reason), e.g. retries_exhausted",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``saga dlq list | show | replay | discard``."""
    dlq = sub.add_parser(
        "dlq",
        help="list, inspect, replay and discard dead-letter queues",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="DLQ_COMMAND")

    listing = commands.add_parser("list", help="every dead-letter queue with its depth")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=cmd_list)

    show = commands.add_parser("show", help="print dead letters without removing them")
    show.add_argument("queue", metavar="QUEUE")
    show.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    show.add_argument("--json", action="store_true", help="print JSON")
    _add_selection(show, with_all=False)
    show.set_defaults(run=cmd_show)

    again = commands.add_parser("replay", help="send dead letters back to be processed")
    again.add_argument("queue", metavar="QUEUE")
    _add_selection(again, with_all=True)
    again.add_argument("--dry-run", action="store_true", help="only say what would be replayed")
    again.add_argument("--rate", type=_positive, help="at most this many messages per second")
    again.add_argument(
        "--to",
        choices=("work-queue", "original"),
        default="work-queue",
        help="the work queue they failed in (default), or their original exchange and "
        "routing key (every queue bound there gets them again)",
    )
    again.set_defaults(run=cmd_replay)

    drop = commands.add_parser("discard", help="remove dead letters, recording why")
    drop.add_argument("queue", metavar="QUEUE")
    _add_selection(drop, with_all=True)
    drop.add_argument("--reason", required=True, help="why: kept with each discarded message")
    drop.add_argument("--dry-run", action="store_true", help="only say what would be discarded")
    drop.set_defaults(run=cmd_discard)
