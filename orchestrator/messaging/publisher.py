"""Confirmed publishing on one channel of a robust connection, shared by the Bus and the
faststream participant kit.

* Every publish waits for the broker's confirm; a message the broker returns, refuses
  or does not confirm in time raises :class:`BrokerUnavailable`, so the caller keeps it
  and publishes again.
* A second publish of a message id waits until the first settles: the client library
  matches a returned message to its publish by message id, so with one id in flight
  twice (a relay republish beside the dispatch), a return would fail the other publish
  and let the returned one count as confirmed.
* A publish whose channel closes before the confirm (the connection's node died) fails
  with :class:`BrokerUnavailable` too: the client library cancels the confirm it waited
  for, and a cancellation that is not the caller's own must not look like one (the
  caller's task would end silently and the message wait for the outbox relay's idle
  timer instead of being published again at once).
* A publish the broker nacks fails, and the channel is replaced before the next one
  (the old one is closed a publish timeout later, so the others it carries are not
  failed by it).
  After a cluster node dies, a channel on the node the connection failed over to can go
  on nacking every publish to quorum queues that have a new leader, while other
  channels publish to the same queues (seen with RabbitMQ 3.10 in
  ``tests/integration/test_cluster_failover.py``: one service's replies were refused
  for minutes and its commands dead-lettered). A fresh channel publishes again. A nack
  is otherwise rare (an internal broker error), so a new channel costs nothing in
  normal running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

import structlog
from aio_pika.exceptions import AMQPError, DeliveryError, PublishError

from orchestrator.errors import BrokerUnavailable, NotConnected

if TYPE_CHECKING:
    import aio_pika
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

__all__ = ["ConfirmingPublisher", "nacked"]

log = structlog.get_logger(__name__)


def nacked(error: BaseException) -> bool:
    """Whether the broker refused the publish with a ``basic.nack`` (not a return)."""
    return (
        isinstance(error, DeliveryError)
        and not isinstance(error, PublishError)
        and getattr(error.frame, "name", None) == "Basic.Nack"
    )


class ConfirmingPublisher:
    """A confirming channel on ``connection`` with the named exchanges looked up (not
    declared); :meth:`open` before the first publish."""

    def __init__(
        self,
        connection: AbstractConnection,
        *,
        name: str,
        exchanges: Iterable[str] = (),
        timeout: float = 15.0,
    ) -> None:
        self.connection = connection
        self.name = name
        self.timeout = timeout
        self._names = tuple(exchanges)
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._in_flight: dict[str, asyncio.Event] = {}
        """Message ids being published now, each set when its publish settles."""
        self._renewing = asyncio.Lock()
        self.renewed = 0
        """Channels replaced after a nack."""
        self._renewed_at = float("-inf")
        self._retiring: set[asyncio.Task[None]] = set()
        """Replaced channels, each closed after ``timeout``."""

    async def open(self) -> None:
        """Open the channel (and look up its exchanges)."""
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        exchanges: dict[str, AbstractExchange] = {"": channel.default_exchange}
        for name in self._names:
            exchanges[name] = await channel.get_exchange(name, ensure=False)
        self._channel, self._exchanges = channel, exchanges

    async def publish(
        self, message: aio_pika.Message, *, exchange: str, routing_key: str, mandatory: bool = True
    ) -> None:
        """Publish and wait for the confirm; raise :class:`BrokerUnavailable` if the
        broker refuses, returns or does not confirm it."""
        if self._channel is None:
            raise NotConnected(f"publisher {self.name!r} is not open")
        message_id = message.message_id
        while message_id and (earlier := self._in_flight.get(message_id)) is not None:
            await earlier.wait()
        settled = asyncio.Event()
        if message_id:
            self._in_flight[message_id] = settled
        # The channel is read after the wait: a nack of the publish waited for may have
        # replaced it.
        channel = self._channel
        try:
            if channel is None:
                raise NotConnected(f"publisher {self.name!r} is closed")
            await self._send(channel, message, exchange, routing_key, mandatory=mandatory)
        except BrokerUnavailable as e:
            cause = e.__cause__
            if cause is not None and channel is not None and nacked(cause):
                # Before the id is released: a publish of it waiting behind this one
                # must find the new channel, not the one that nacks.
                await self._renew(channel, cause)
            raise
        finally:
            if message_id and self._in_flight.get(message_id) is settled:
                del self._in_flight[message_id]
            settled.set()

    async def _send(
        self,
        channel: AbstractChannel,
        message: aio_pika.Message,
        exchange: str,
        routing_key: str,
        *,
        mandatory: bool,
    ) -> None:
        """One publish on ``channel``, its failures as :class:`BrokerUnavailable` (the
        broker's error its cause)."""
        exchanges = self._exchanges
        target = exchanges.get(exchange) if channel is self._channel else None
        try:
            if target is None:
                target = await channel.get_exchange(exchange, ensure=False)
                if channel is self._channel:
                    exchanges[exchange] = target
            await target.publish(
                message, routing_key=routing_key, mandatory=mandatory, timeout=self.timeout
            )
        except asyncio.CancelledError as e:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # we are being cancelled: not a failed publish
            # The client library cancels the confirms still awaited on a channel that
            # closes (its node died): not confirmed, so the caller must keep the message.
            raise BrokerUnavailable(
                f"publish to {exchange or '(default)'}/{routing_key} not confirmed: "
                "its channel closed first"
            ) from e
        except (TimeoutError, DeliveryError, PublishError, AMQPError, OSError, RuntimeError) as e:
            raise BrokerUnavailable(
                f"publish to {exchange or '(default)'}/{routing_key} not confirmed: {e!r}"
            ) from e

    async def _renew(self, refused: AbstractChannel, error: BaseException) -> None:
        """Replace the channel ``refused`` (once, however many publishes saw it nack; at
        most one try a second, successful or not). New publishes go to the new channel
        at once; the old one is closed only after ``timeout``, when the publishes
        waiting on it have had their confirms (a nack for one queue does not fail those
        to the others)."""
        async with self._renewing:
            loop = asyncio.get_running_loop()
            if self._channel is not refused or loop.time() - self._renewed_at < 1.0:
                return  # already replaced, closed, or tried a moment ago
            self._renewed_at = loop.time()  # tried, whatever comes of it: no queue of tries
            try:
                await asyncio.wait_for(self.open(), timeout=self.timeout)
            except Exception as e:  # the connection is down: its reconnect restores the old one
                log.warning("publish_channel_not_renewed", publisher=self.name, error=repr(e))
                return
            self.renewed += 1
            log.warning("publish_channel_renewed", publisher=self.name, after=repr(error))
        retire = asyncio.create_task(self._retire(refused), name=f"{self.name}.retire-channel")
        self._retiring.add(retire)
        retire.add_done_callback(self._retiring.discard)

    async def _retire(self, channel: AbstractChannel) -> None:
        """Close a replaced channel once its publishes have had time to be confirmed."""
        try:
            await asyncio.sleep(self.timeout)
        finally:
            try:
                # Even when it looks closed (its connection is down): closing marks it so
                # that the robust connection does not reopen it on reconnect.
                await channel.close()
            except Exception as e:  # closed with its connection already
                log.debug("replaced_channel_close_failed", publisher=self.name, error=repr(e))

    async def close(self) -> None:
        """Close the channel, and those replaced (the connection stays)."""
        channel, self._channel = self._channel, None
        self._exchanges = {}
        for retire in list(self._retiring):
            retire.cancel()  # its channel is closed as it stops
        await asyncio.gather(*self._retiring, return_exceptions=True)
        if channel is not None and not channel.is_closed:
            await channel.close()
