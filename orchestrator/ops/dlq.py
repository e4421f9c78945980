"""Dead-letter queues for operators: count, inspect, replay and discard parked messages.

Used by the CLI (``saga dlq``) and the HTTP API; only AMQP and the store are needed, not
the management plugin. An operation takes the messages of one dead-letter queue with
basic.get on a channel of its own and holds them unacknowledged while it runs, so each
message is seen once; whatever it does not act on goes back (nack with requeue, or the
broker requeues when the channel closes, also if this process dies). A message leaves a
dead-letter queue only after what replaces it is durable: its replayed copy confirmed by
the broker, or the record of its discard stored in MongoDB (``dlq_discards``).

Because held messages are invisible to anyone else, one operation at a time works on a
dead-letter queue (:mod:`orchestrator.ops.exclusive`); a caller that cannot get the
queue within its wait gets :class:`DlqBusy`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import aio_pika
from aio_pika.exceptions import ChannelNotFoundEntity
from pymongo.errors import PyMongoError

from orchestrator.errors import OrchestratorError
from orchestrator.messaging.envelope import ATTEMPT, copy_message, header_int
from orchestrator.ops.exclusive import Pacer, exclusive
from orchestrator.ops.letters import (
    EVERYTHING,
    DeadLetter,
    DeadLetterQueue,
    DlqError,
    DlqReport,
    Outcome,
    OutcomeStatus,
    Selector,
    discard_record,
    outcome,
    read_dead_letter,
    resolve_queue,
)

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.messaging.bus import Bus
    from orchestrator.messaging.topology import Topology, WorkQueue

__all__ = [
    "DISCARDS",
    "REPLAYED_AT",
    "REPLAY_COUNT",
    "Progress",
    "ReplayTarget",
    "discard",
    "list_dead_letters",
    "peek",
    "replay",
    "replay_message",
]

DISCARDS = "dlq_discards"
"""Collection holding one record per discarded message."""
REPLAYED_AT = "x-replayed-at"
REPLAY_COUNT = "x-replay-count"
FAILURE_HEADERS = frozenset(
    {
        "x-error-reason",
        "x-error-type",
        "x-error-message",
        "x-first-failure-at",
        "x-last-failure-at",
        "x-queue",
        "x-death",
        "x-delivery-count",
    }
)
BROKER_DEATH_PREFIXES = ("x-first-death-", "x-last-death-")
"""Headers that describe a failure; a replayed copy starts without them (also without
the broker's own dead-lettering headers)."""

LISTING_WAIT = 2.0
"""Seconds a listing waits for another operation on the queue before giving up."""
OPERATION_WAIT = 10.0
"""Seconds a replay or discard waits for another operation (a listing is quick)."""
ReplayTarget = Literal["work_queue", "original"]
Progress = Callable[[int, int], None]
"""Called with (messages looked at, messages in the queue) as an operation advances."""


async def list_dead_letters(bus: Bus) -> list[DeadLetterQueue]:
    """Every dead-letter queue of the bus's topology with its depth (passive declares)."""
    channel = await bus.connection.channel()
    try:
        found = []
        for q in bus.topology.work_queues:
            declared = await _passive(channel, q.dlq)
            found.append(
                DeadLetterQueue(
                    name=q.dlq,
                    work_queue=q.name,
                    purpose=q.purpose,
                    messages=declared.declaration_result.message_count or 0,
                )
            )
        return found
    finally:
        await _close(channel)


async def peek(
    bus: Bus,
    queue: str,
    *,
    selector: Selector = EVERYTHING,
    limit: int = 20,
    wait: float = LISTING_WAIT,
) -> list[DeadLetter]:
    """Up to ``limit`` selected messages of ``queue``, oldest first, left in the queue.
    :class:`DlqBusy` if a replay or discard of the queue runs longer than ``wait``."""
    work = resolve_queue(bus.topology, queue)
    found: list[DeadLetter] = []
    async with _holding(bus, work, wait=wait) as hold:
        while len(found) < limit and (item := await hold.next_match(selector)):
            found.append(item[1])
    return found


async def replay(
    bus: Bus,
    queue: str,
    *,
    selector: Selector,
    dry_run: bool = False,
    rate_per_second: float | None = None,
    target: ReplayTarget = "work_queue",
    progress: Progress | None = None,
    wait: float = OPERATION_WAIT,
) -> DlqReport:
    """Send the selected messages of ``queue`` back to be processed again.

    Each copy is published persistent, mandatory and confirmed (see
    :func:`replay_message`); only then is the dead letter acked. ``target``: the work
    queue the message failed in (default; via the default exchange, so no other queue
    bound to the original exchange gets it twice), or its original exchange and routing
    key (``original``; the work queue when they are unknown). A copy the broker does not
    confirm stops the run: that message and the rest stay where they are.
    ``rate_per_second`` paces the publishes. :class:`DlqBusy` if another operation holds
    the queue for longer than ``wait``.
    """
    work = resolve_queue(bus.topology, queue)
    pace = Pacer(rate_per_second)
    async with _holding(bus, work, wait=wait) as hold:
        report = _report("replay", work, selector, dry_run, hold)
        _tick(progress, hold)
        while report.ok and (item := await hold.next_match(selector)):
            pacer = None if dry_run else pace
            done = await _replay_one(bus, hold, item, work=work, target=target, pace=pacer)
            report.outcomes.append(done)
            _tick(progress, hold)
        report.scanned = hold.scanned
        return report


async def discard(
    bus: Bus,
    queue: str,
    *,
    selector: Selector,
    reason: str,
    database: AsyncDatabase[dict[str, Any]],
    actor: str = "",
    dry_run: bool = False,
    progress: Progress | None = None,
    wait: float = OPERATION_WAIT,
) -> DlqReport:
    """Remove the selected messages of ``queue`` for good, each recorded first in
    ``dlq_discards`` (ids, saga id, type, headers, body, ``reason``, ``actor``, time).
    A message whose record cannot be stored stays in the queue and stops the run."""
    if not reason.strip():
        raise DlqError("a reason is required to discard dead letters (it is kept with them)")
    work = resolve_queue(bus.topology, queue)
    records = database[DISCARDS]
    async with _holding(bus, work, wait=wait) as hold:
        report = _report("discard", work, selector, dry_run, hold)
        _tick(progress, hold)
        while report.ok and (item := await hold.next_match(selector)):
            raw, letter = item
            error = None
            if not dry_run:
                record = discard_record(letter, reason.strip(), actor)
                error = await _discard_one(records, hold, raw, record)
            status: OutcomeStatus = "would" if dry_run else "failed" if error else "done"
            report.outcomes.append(outcome(letter, status, error or ""))
            _tick(progress, hold)
        report.scanned = hold.scanned
        return report


def replay_message(raw: AbstractIncomingMessage) -> aio_pika.Message:
    """The copy a replay publishes: same ids, type, body and reply_to, persistent, with
    the failure headers removed, ``x-attempt`` 1 and ``x-replayed-at`` and
    ``x-replay-count`` set. The original routing headers stay, for the next failure."""
    headers = {
        k: v
        for k, v in (raw.headers or {}).items()
        if k not in FAILURE_HEADERS and not k.startswith(BROKER_DEATH_PREFIXES)
    }
    headers[ATTEMPT] = 1
    headers[REPLAY_COUNT] = header_int(headers.get(REPLAY_COUNT), 0) + 1
    headers[REPLAYED_AT] = datetime.now(UTC).isoformat()
    return copy_message(raw, headers=headers)


async def _replay_one(
    bus: Bus,
    hold: _Hold,
    item: tuple[AbstractIncomingMessage, DeadLetter],
    *,
    work: WorkQueue,
    target: ReplayTarget,
    pace: Pacer | None,
) -> Outcome:
    """Replay one message, paced; without a pacer (a dry run) only say where it would go."""
    raw, letter = item
    exchange, key = _destination(work, raw, target)
    where = f"-> {exchange or '(default exchange)'} / {key}"
    if pace is None:
        return outcome(letter, "would", where)
    await pace.wait()
    error = await _republish(bus, hold, raw, exchange, key)
    return outcome(letter, "failed", error) if error else outcome(letter, "done", where)


async def _republish(
    bus: Bus, hold: _Hold, raw: AbstractIncomingMessage, exchange: str, key: str
) -> str | None:
    """Publish the copy, then ack the dead letter; None, or what went wrong."""
    if exchange not in _exchanges(bus.topology):
        return f"not replayed: exchange {exchange!r} is not part of this deployment"
    try:
        await bus.publish(replay_message(raw), exchange=exchange, routing_key=key)
    except OrchestratorError as e:
        return f"not replayed, still in the dead-letter queue: {e}"
    try:
        await hold.ack(raw)
    except Exception as e:  # whatever broke, the broker keeps (and requeues) the original
        return (
            "replayed, but still in the dead-letter queue too "
            f"(a second replay would send it twice): {e!r}"
        )
    return None


async def _discard_one(
    records: AsyncCollection[dict[str, Any]],
    hold: _Hold,
    raw: AbstractIncomingMessage,
    record: dict[str, Any],
) -> str | None:
    """Store the record, then ack the dead letter; None, or what went wrong."""
    try:
        await records.insert_one(record)
    except PyMongoError as e:
        return f"not discarded, the record could not be stored: {e}"
    try:
        await hold.ack(raw)
    except Exception as e:  # whatever broke, the broker keeps (and requeues) the original
        return f"recorded as discarded (_id {record['_id']}), but still in the queue: {e!r}"
    return None


def _destination(
    work: WorkQueue, raw: AbstractIncomingMessage, target: ReplayTarget
) -> tuple[str, str]:
    if target == "original":
        headers = raw.headers or {}
        exchange = _text(headers.get("x-original-exchange"))
        key = _text(headers.get("x-original-routing-key"))
        deaths = headers.get("x-death")
        if exchange is None and isinstance(deaths, list) and deaths:
            # Dead-lettered by the broker itself: it recorded where it was published.
            oldest: Any = deaths[-1] if isinstance(deaths[-1], dict) else {}
            keys = oldest.get("routing-keys")
            exchange = _text(oldest.get("exchange"))
            key = _text(keys[0]) if isinstance(keys, list) and keys else None
        if exchange is not None and key:
            return exchange, key
    return "", work.name


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return None if value is None else str(value)


def _exchanges(topology: Topology) -> set[str]:
    return {
        "",
        topology.commands_exchange,
        topology.replies_exchange,
        topology.events_exchange,
        topology.control_exchange,
    }


@contextlib.asynccontextmanager
async def _holding(bus: Bus, work: WorkQueue, *, wait: float) -> AsyncIterator[_Hold]:
    """A hold on ``work``'s dead-letter queue, on a channel of its own, while no other
    operation works on it."""
    async with exclusive(bus, work.dlq, wait=wait):
        channel = await bus.connection.channel()
        try:
            hold = _Hold(work, await _passive(channel, work.dlq))
            try:
                yield hold
            finally:
                await hold.release()
        finally:
            await _close(channel)


class _Hold:
    """Messages taken from a dead-letter queue and not yet settled."""

    def __init__(self, work: WorkQueue, queue: AbstractQueue) -> None:
        self._work = work
        self._queue = queue
        self._unsettled: dict[int, AbstractIncomingMessage] = {}
        self.depth = queue.declaration_result.message_count or 0
        self.scanned = 0

    async def next_match(
        self, selector: Selector
    ) -> tuple[AbstractIncomingMessage, DeadLetter] | None:
        """The next selected message among those in the queue when the hold began, or
        None. Later arrivals (a replayed message failing again) are not looked at."""
        while self.scanned < self.depth:
            raw = await self._queue.get(no_ack=False, fail=False)
            if raw is None:
                return None
            self.scanned += 1
            self._unsettled[raw.delivery_tag or 0] = raw
            letter = read_dead_letter(self._work, raw)
            if selector.matches(letter):
                return raw, letter
        return None

    async def ack(self, raw: AbstractIncomingMessage) -> None:
        """Remove ``raw`` from the queue for good."""
        await raw.ack()
        self._unsettled.pop(raw.delivery_tag or 0, None)

    async def release(self) -> None:
        """Requeue every message not acked, in place."""
        for raw in self._unsettled.values():
            with contextlib.suppress(Exception):  # a closed channel requeues them anyway
                await raw.nack(requeue=True)
        self._unsettled.clear()


def _report(
    action: Literal["replay", "discard"],
    work: WorkQueue,
    selector: Selector,
    dry_run: bool,
    hold: _Hold,
) -> DlqReport:
    return DlqReport(
        action=action, queue=work.dlq, selector=str(selector), dry_run=dry_run, depth=hold.depth
    )


def _tick(progress: Progress | None, hold: _Hold) -> None:
    if progress is not None:
        progress(hold.scanned, hold.depth)


async def _passive(channel: AbstractChannel, name: str) -> AbstractQueue:
    try:
        return await channel.declare_queue(name, passive=True)
    except ChannelNotFoundEntity as e:
        raise DlqError(f"queue {name} does not exist on the broker: {e}") from e


async def _close(channel: AbstractChannel) -> None:
    with contextlib.suppress(Exception):  # already closed by the broker is fine
        await channel.close()
