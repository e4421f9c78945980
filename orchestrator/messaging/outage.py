"""Riding out a store outage without spending the messages' retry budgets.

A MongoDB election, a failover or a frozen primary is not a message's fault. When a
handler fails, the consumer asks the :class:`StoreGate` whether the store answers:

* it answers: the failure is the message's (or a lost race); the usual retry tiers
  count the attempt;
* it does not: the message is *held*, unacked, in the consumer's hands, and run again
  once a ping answers. Nothing is counted, nothing is forwarded, and since every
  prefetched message of the service ends up held the same way, the consumers take no
  more messages until the store is back: a pause, not a storm of retry copies.

Messages stay acked only after their effect is stored: a held message is acked when a
run of its handler succeeds. One probe runs at a time, whatever the number of held
messages, and a verdict is reused for a moment. An outage longer than the broker's
``consumer_timeout`` (30 minutes by default) makes the broker close the channel: the
held messages go back to their queue and come again, their attempts still uncounted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from contracts import MalformedMessage
from orchestrator.errors import Deferred

__all__ = ["Probe", "StoreGate"]

log = structlog.get_logger("outage")

Probe = Callable[[], Awaitable[bool]]
"""True if the store answered (a ping), False if it did not; never raises."""
T = TypeVar("T")


class StoreGate:
    """Whether the store answers, shared by every consumer of one service."""

    def __init__(
        self, probe: Probe, *, fresh: float = 0.2, backoff: float = 0.25, max_backoff: float = 2.0
    ) -> None:
        self.probe = probe
        self.fresh = fresh
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.held = 0
        """Messages held right now (for tests and metrics)."""
        self.outages = 0
        """Outages seen since start (for tests and metrics)."""
        self._verdict: tuple[float, bool] | None = None
        self._probing: asyncio.Future[bool] | None = None
        self._closed = False

    async def answers(self) -> bool:
        """Whether the store answers now: one probe shared by every caller. Only a recent
        "does not answer" is reused: after a failure, "answers" is always asked afresh,
        since the store may have gone away since (the failure may be the first sign)."""
        loop = asyncio.get_running_loop()
        verdict = self._verdict
        if verdict is not None and not verdict[1] and loop.time() - verdict[0] < self.fresh:
            return False
        if self._probing is None:
            self._probing = asyncio.ensure_future(self.probe())
            self._probing.add_done_callback(self._probed)
        return await asyncio.shield(self._probing)

    def _probed(self, probing: asyncio.Future[bool]) -> None:
        self._probing = None
        ok = not probing.cancelled() and probing.exception() is None and probing.result()
        was_down = self._verdict is not None and not self._verdict[1]
        self._verdict = (asyncio.get_running_loop().time(), bool(ok))
        if ok and was_down:
            log.warning("store_answers_again", held=self.held)

    async def wait(self) -> None:
        """Until the store answers, backing off; cancelled if the gate is closed."""
        delay = self.backoff
        while not await self.answers():
            if self._closed:
                raise asyncio.CancelledError("the service is stopping")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    def close(self) -> None:
        """The service is stopping: held messages are let go unsettled (the broker gives
        them back to their queue, their attempts uncounted)."""
        self._closed = True

    def guard(self, handler: Callable[[T], Awaitable[None]]) -> Callable[[T], Awaitable[None]]:
        """``handler``, run again while it fails and the store does not answer."""

        async def guarded(item: T) -> None:
            while True:
                try:
                    await handler(item)
                    return
                except (MalformedMessage, Deferred):
                    raise
                except Exception as e:
                    if self._closed or await self.answers():
                        raise  # the store answers: the message's own failure, counted
                    await self._hold(e)

        return guarded

    async def _hold(self, error: Exception) -> None:
        if self.held == 0:
            self.outages += 1
        self.held += 1
        log.warning("store_unavailable_message_held", error=repr(error)[:300], held=self.held)
        try:
            await self.wait()
        finally:
            self.held -= 1
