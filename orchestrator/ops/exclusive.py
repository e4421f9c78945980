"""One operation at a time on a dead-letter queue, and pacing of replays.

A dead-letter operation holds the messages it took unacknowledged, invisible to anyone
else, so two at once would hide messages from each other: a listing beside a replay
would make the replay stop early and see only what the replay had not taken. The lock
is an exclusive queue ``<dlq>.lock`` on the broker (deleted by the broker when the
holder's connection closes, so a dead process never keeps it) plus an in-process lock
for callers sharing one connection (the broker lets a connection redeclare its own
exclusive queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiormq.exceptions import ChannelLockedResource

from orchestrator.ops.letters import DlqBusy, DlqError

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel

    from orchestrator.messaging.bus import Bus

__all__ = ["Pacer", "exclusive"]


_LOCAL: weakref.WeakKeyDictionary[Bus, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def exclusive(bus: Bus, dlq: str, *, wait: float) -> AsyncIterator[None]:
    """The lock on one dead-letter queue: in this process (callers share a connection,
    and the broker lets a connection redeclare its own exclusive queue), then on the
    broker (the exclusive queue ``<dlq>.lock``)."""
    lock = _LOCAL.setdefault(bus, {}).setdefault(dlq, asyncio.Lock())
    busy = DlqBusy(
        f"another replay, discard or listing of {dlq} is running; try again when it is done"
    )
    try:
        await asyncio.wait_for(lock.acquire(), timeout=wait)
    except TimeoutError:
        raise busy from None
    try:
        await _take_broker_lock(bus, f"{dlq}.lock", wait=wait, busy=busy)
        try:
            yield
        finally:
            await _drop_broker_lock(bus, f"{dlq}.lock")
    finally:
        lock.release()


async def _take_broker_lock(bus: Bus, name: str, *, wait: float, busy: DlqBusy) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        channel = await bus.connection.channel()
        try:
            await channel.declare_queue(name, exclusive=True, arguments={"x-queue-type": "classic"})
            return
        except ChannelLockedResource:
            if loop.time() >= deadline:
                raise busy from None
        finally:
            await _close(channel)
        await asyncio.sleep(0.1)  # the holder is another process: poll until it is done


async def _drop_broker_lock(bus: Bus, name: str) -> None:
    with contextlib.suppress(Exception):  # gone with a closed connection is as good
        channel = await bus.connection.channel()
        try:
            await channel.queue_delete(name)
        finally:
            await _close(channel)


class Pacer:
    """At most ``rate`` calls of :meth:`wait` return per second, evenly spaced."""

    def __init__(self, rate: float | None) -> None:
        if rate is not None and rate <= 0:
            raise DlqError(f"the rate must be a positive number of messages per second, not {rate}")
        self._interval = 1 / rate if rate else 0.0
        self._next: float | None = None

    async def wait(self) -> None:
        """Sleep until the next slot (pacing publishes is the point here)."""
        if not self._interval:
            return
        now = asyncio.get_running_loop().time()
        start = max(now, self._next if self._next is not None else now)
        if start > now:
            await asyncio.sleep(start - now)
        self._next = start + self._interval


async def _close(channel: AbstractChannel) -> None:
    with contextlib.suppress(Exception):  # already closed by the broker is fine
        await channel.close()
