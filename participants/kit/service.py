"""What every participant service shares: command handlers that return a reply, which
is published to the replies exchange with confirms before the command is acked.

With ``faults_enabled`` set, each command first asks the fault injector whether a rule
hits it (``participants.kit.faults``); otherwise the hook is a no-op that reads nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from contracts import MalformedMessage, Message
from orchestrator.messaging.envelope import HANDLER_ATTEMPTS, build_message
from orchestrator.observability import tracing
from orchestrator.runtime.host import ServiceHost
from orchestrator.runtime.locks import KeyedLocks
from participants.kit.faults import NO_FAULTS, FaultInjector, InjectedFault

if TYPE_CHECKING:
    from orchestrator.faults import FaultRule
    from orchestrator.messaging.envelope import Envelope
    from participants.kit.faults import FaultHook

__all__ = [
    "CommandHandler",
    "EventHandler",
    "ParticipantError",
    "ParticipantService",
    "current_envelope",
]

log = structlog.get_logger("participant")

C = TypeVar("C", bound=Message)
CommandHandler = Callable[[str, Any], Awaitable[Message | None]]
"""(saga_id, command) -> reply, or None for commands nobody waits on (restocks).
Business refusals are replies, not exceptions."""
EventHandler = Callable[[str, Any], Awaitable[None]]
Refusal = Callable[[Any, str], Message]
"""(command, reason) -> the command's business refusal."""

_HANDLING: ContextVar[Envelope] = ContextVar("participant_command")


def current_envelope() -> Envelope:
    """The command being handled (inside a command handler). For the rare handler whose
    effect depends on which send it answers: a resumed retriable step comes in a new
    round, with a message id of its own (``<saga>:<step>:do:r<n>``)."""
    return _HANDLING.get()


class ParticipantError(Exception):
    """Root of the participants' errors."""


class ParticipantService(ServiceHost):
    """A service that executes saga steps. Subclasses register handlers in ``setup``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._commands: dict[type[Message], CommandHandler] = {}
        self._refusals: dict[type[Message], Refusal] = {}
        self._events: dict[type[Message], EventHandler] = {}
        self._locks = KeyedLocks()
        self.replies_sent = 0
        self.faults: FaultHook = NO_FAULTS
        if self.settings.faults_enabled:
            self.faults = FaultInjector(
                service=self.service,
                instance=self.bus.name,
                namespace=self.settings.namespace,
                refusable=lambda command: type(command) in self._refusals,
            )

    async def start(self) -> None:
        """Start the service, then (only if enabled) the fault injector. Commands that
        arrive in between wait for its rules."""
        await super().start()
        await self.faults.start(database=self.db, bus=self.bus, topology=self.topology)

    async def stop(self) -> None:
        """Stop the fault injector, then the service."""
        await self.faults.stop()
        await super().stop()

    async def kill(self) -> None:
        """Drop everything at once (the fault injector's listener too)."""
        await self.faults.stop()
        await super().kill()

    def on_command(
        self,
        kind: type[C],
        handler: Callable[[str, C], Awaitable[Message | None]],
        *,
        refusal: Callable[[C, str], Message] | None = None,
    ) -> None:
        """Handle commands of type ``kind``. ``refusal`` builds the command's business
        refusal from a reason (what an injected ``decline`` fault replies)."""
        self._commands[kind] = handler
        if refusal is not None:
            self._refusals[kind] = refusal

    def on_event(self, kind: type[C], handler: Callable[[str, C], Awaitable[None]]) -> None:
        """Handle events of type ``kind`` (no reply)."""
        self._events[kind] = handler

    async def handle_command(self, envelope: Envelope) -> None:
        """Run the handler (one at a time per saga here) and send its reply, doing what
        an injected fault says, if one applies."""
        handler = self._commands.get(type(envelope.message))
        if handler is None:  # routed here by mistake: park it visibly, never drop it
            raise MalformedMessage(
                "unknown_type",
                f"the {self.service} service has no handler for {envelope.message.TYPE}",
            )
        fault = await self.faults.match(envelope)
        if fault is not None and fault.action == "raise":
            raise InjectedFault(f"{fault.reason} (rule {fault.rule_id})")
        if fault is not None and fault.action == "decline":
            refuse = self._refusals[type(envelope.message)]
            await self.send_reply(envelope, refuse(envelope.message, fault.reason))
            return
        token = _HANDLING.set(envelope)
        try:
            async with self._locks(envelope.correlation_id):
                with tracing.handling(self.service, envelope):  # tracing: the handler's span
                    reply = await handler(envelope.correlation_id, envelope.message)
        finally:
            _HANDLING.reset(token)
        if fault is not None and fault.action == "crash":
            self.faults.crash(fault)
        if reply is not None:
            await self.send_reply(envelope, reply, fault=fault)

    async def handle_event(self, envelope: Envelope) -> None:
        """Run the event handler, if any."""
        handler = self._events.get(type(envelope.message))
        if handler is not None:
            async with self._locks(envelope.correlation_id):
                await handler(envelope.correlation_id, envelope.message)

    async def send_reply(
        self, envelope: Envelope, reply: Message, *, fault: FaultRule | None = None
    ) -> None:
        """Publish ``reply`` to the command's ``reply_to``. Its id derives from the
        command's, so the reply to a redelivered command is recognised as a duplicate.
        An injected ``drop``, ``delay`` or ``duplicate`` fault applies here."""
        copies = 1
        if fault is not None and fault.action == "drop":
            log.warning("reply_dropped_by_fault", reply_type=reply.TYPE)
            return
        if fault is not None and fault.action == "delay":
            await asyncio.sleep(fault.delay_seconds)
        if fault is not None and fault.action == "duplicate":
            copies = fault.copies
        message = build_message(
            reply,
            message_id=f"{envelope.message_id}:reply",
            correlation_id=envelope.correlation_id,
            causation_id=envelope.message_id,
            app_id=self.service,
            headers={HANDLER_ATTEMPTS: envelope.attempt},
        )
        if not envelope.reply_to:
            # Its sender waits for no reply (a raw publish); the effect is stored, and the
            # orchestrator's deadline resends the command with reply_to if a saga waits.
            log.warning("reply_not_routable", reply_type=reply.TYPE, reason="no reply_to")
            return
        for _ in range(copies):
            await self.bus.publish(
                message, exchange=self.topology.replies_exchange, routing_key=envelope.reply_to
            )
            self.replies_sent += 1
        log.debug("reply_sent", reply_type=reply.TYPE, copies=copies)
