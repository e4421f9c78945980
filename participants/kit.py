"""What every participant service shares: command handlers that return a reply, which
is published to the replies exchange with confirms before the command is acked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from contracts import Message
from orchestrator.host import ServiceHost
from orchestrator.locks import KeyedLocks
from orchestrator.messaging.envelope import HANDLER_ATTEMPTS, build_message

if TYPE_CHECKING:
    from orchestrator.messaging.envelope import Envelope

__all__ = ["CommandHandler", "EventHandler", "ParticipantError", "ParticipantService"]

log = structlog.get_logger("participant")

C = TypeVar("C", bound=Message)
CommandHandler = Callable[[str, Any], Awaitable[Message | None]]
"""(saga_id, command) -> reply, or None for commands nobody waits on (restocks).
Business refusals are replies, not exceptions."""
EventHandler = Callable[[str, Any], Awaitable[None]]


class ParticipantError(Exception):
    """Root of the participants' errors."""


class ParticipantService(ServiceHost):
    """A service that executes saga steps. Subclasses register handlers in ``setup``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._commands: dict[type[Message], CommandHandler] = {}
        self._events: dict[type[Message], EventHandler] = {}
        self._locks = KeyedLocks()
        self.replies_sent = 0

    def on_command(
        self, kind: type[C], handler: Callable[[str, C], Awaitable[Message | None]]
    ) -> None:
        """Handle commands of type ``kind``."""
        self._commands[kind] = handler

    def on_event(self, kind: type[C], handler: Callable[[str, C], Awaitable[None]]) -> None:
        """Handle events of type ``kind`` (no reply)."""
        self._events[kind] = handler

    async def handle_command(self, envelope: Envelope) -> None:
        """Run the handler (one at a time per saga here) and send its reply."""
        handler = self._commands.get(type(envelope.message))
        if handler is None:
            log.warning("command_not_handled_here", message_type=envelope.message.TYPE)
            return
        async with self._locks(envelope.correlation_id):
            reply = await handler(envelope.correlation_id, envelope.message)
        if reply is not None:
            await self.send_reply(envelope, reply)

    async def handle_event(self, envelope: Envelope) -> None:
        """Run the event handler, if any."""
        handler = self._events.get(type(envelope.message))
        if handler is not None:
            async with self._locks(envelope.correlation_id):
                await handler(envelope.correlation_id, envelope.message)

    async def send_reply(self, envelope: Envelope, reply: Message) -> None:
        """Publish ``reply`` to the command's ``reply_to``. Its id derives from the
        command's, so the reply to a redelivered command is recognised as a duplicate."""
        message = build_message(
            reply,
            message_id=f"{envelope.message_id}:reply",
            correlation_id=envelope.correlation_id,
            causation_id=envelope.message_id,
            app_id=self.service,
            headers={HANDLER_ATTEMPTS: envelope.attempt},
        )
        await self.bus.publish(
            message,
            exchange=self.topology.replies_exchange,
            routing_key=envelope.reply_to or self.topology.reply_key,
        )
        self.replies_sent += 1
        log.info("reply_sent", reply_type=reply.TYPE)
