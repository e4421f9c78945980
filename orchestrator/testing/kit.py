"""Run saga definitions against scripted participants, in memory, in milliseconds.

:class:`SagaTestKit` drives the real :class:`~orchestrator.runtime.engine.SagaRuntime`
(the code that runs in production) over an in-memory store and an in-memory outbox
publisher, with a fake clock. Every command the runtime publishes goes, in order, to a
scripted participant whose reply is fed back as the broker would deliver it (same reply
ids as the participant kit, so duplicates are recognised). Deadlines fire only when the
test moves the clock: :meth:`SagaTestKit.advance`. No broker, no MongoDB, no sleeps.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from contracts import MalformedMessage, Message, decode, encode
from orchestrator.messaging.envelope import HANDLER_ATTEMPTS, SAGA_VERSION, Envelope
from orchestrator.runtime.engine import SagaRuntime
from orchestrator.runtime.outbox import Dispatcher, OutboxRelay
from orchestrator.saga.registry import SagaRegistry
from orchestrator.store.memory import InMemorySagaStore
from orchestrator.testing.bus import InMemoryOutboxPublisher
from orchestrator.testing.clock import FakeClock
from orchestrator.testing.result import DeadLetter, SagaResult
from orchestrator.testing.script import Behaviour, Expected, KitError, ScriptError, reply

if TYPE_CHECKING:
    from orchestrator.saga.definition import SagaDefinition, Step
    from orchestrator.testing.bus import SentMessage

__all__ = ["SagaTestKit"]

_DEFAULT = (reply(),)


@dataclass(frozen=True, kw_only=True)
class _Reply:
    """A reply on its way to the orchestrator."""

    saga_id: str
    message: Message
    message_id: str
    causation_id: str


class SagaTestKit:
    """Sagas of ``definitions`` with scripted participants, an in-memory store and bus.

    ``step_timeout`` and ``max_sends`` fill in what a step leaves unset, as the
    deployment's ``SAGA_STEP_TIMEOUT`` and ``SAGA_STEP_MAX_SENDS`` do (same defaults).
    """

    def __init__(
        self,
        *definitions: SagaDefinition,
        step_timeout: float = 30.0,
        max_sends: int = 3,
        publish_progress: bool = True,
        clock: FakeClock | None = None,
        max_deliveries: int = 10_000,
    ) -> None:
        if not definitions:
            raise KitError("SagaTestKit needs at least one saga definition")
        self.registry = SagaRegistry(definitions).with_defaults(
            timeout=step_timeout, max_sends=max_sends
        )
        self.clock = clock or FakeClock()
        self.store = InMemorySagaStore()
        self.publisher = InMemoryOutboxPublisher(clock=self.clock)
        self.dispatcher = Dispatcher(store=self.store, publisher=self.publisher)
        self.runtime = SagaRuntime(
            registry=self.registry,
            store=self.store,
            dispatcher=self.dispatcher,
            clock=self.clock,
            publish_progress=publish_progress,
        )
        self.dead_letters: list[DeadLetter] = []
        self.max_deliveries = max_deliveries
        self._scripts: dict[type[Message], tuple[Behaviour, ...]] = {}
        self._sends: Counter[tuple[str, str]] = Counter()
        self._held: list[tuple[datetime, int, _Reply]] = []
        self._seq = itertools.count(1)

    # --- scripting ---------------------------------------------------------------------

    def script(self, command: type[Message], *behaviours: Behaviour) -> None:
        """What the participant does with each send of ``command`` to a saga: the first
        behaviour for the first send, and so on; the last one repeats. Unscripted
        commands get ``reply()``."""
        if not behaviours:
            raise ScriptError(f"script({command.__name__}) needs at least one behaviour")
        known = {c for d in self.registry for s in d.steps for c in s.commands()}
        if command not in known:
            names = ", ".join(sorted(c.__name__ for c in known))
            raise ScriptError(f"{command.__name__} is no command of these sagas ({names})")
        self._scripts[command] = behaviours

    # --- driving sagas -----------------------------------------------------------------

    async def start(
        self,
        message: Message,
        *,
        saga_id: str | None = None,
        message_id: str | None = None,
        version: int | None = None,
    ) -> SagaResult:
        """Start a saga and run it until it waits for the clock (or has ended)."""
        if self.registry.for_start(message) is None:
            starts = ", ".join(f"{d.name}: {d.start.TYPE}" for d in self.registry)
            raise KitError(f"{message.TYPE} starts none of the sagas here ({starts})")
        saga_id = saga_id or f"saga-{next(self._seq)}"
        headers = {SAGA_VERSION: version} if version is not None else {}
        await self._receive(
            Envelope(
                message=_wire(message),
                message_id=message_id or f"{saga_id}:start",
                correlation_id=saga_id,
                headers=headers,
            )
        )
        await self._drain()
        return await self.saga(saga_id)

    async def deliver(
        self, saga_id: str, message: Message, *, message_id: str | None = None, attempts: int = 1
    ) -> SagaResult:
        """Deliver any message to the saga (a stray reply, a redelivered start); runs it
        until it waits again."""
        await self._receive(
            Envelope(
                message=_wire(message),
                message_id=message_id or f"{saga_id}:delivered:{next(self._seq)}",
                correlation_id=saga_id,
                headers={HANDLER_ATTEMPTS: attempts},
            )
        )
        await self._drain()
        return await self.saga(saga_id)

    async def resume(self, saga_id: str) -> SagaResult:
        """An operator resumes a parked saga."""
        await self.runtime.resume(saga_id)
        await self._drain()
        return await self.saga(saga_id)

    async def relay(self) -> int:
        """Run the outbox relay once (every unconfirmed outbox is overdue); returns how
        many commits it published. After ``kit.publisher.fail()``, this is the recovery."""
        relay = OutboxRelay(store=self.store, dispatcher=self.dispatcher, clock=self._later)
        done = await relay.run_once()
        await self._drain()
        return done

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: deadlines fire through the runtime's ``on_deadline`` and
        late replies arrive, each at its own time, in time order."""
        if seconds < 0:
            raise KitError("time only moves forward")
        await self._run_clock(until=self.clock.now + timedelta(seconds=seconds))

    async def advance_until_idle(self, *, limit: int = 1_000) -> None:
        """Let time pass until no deadline and no late reply is pending: every saga has
        then ended or been parked."""
        await self._run_clock(until=None, limit=limit)

    async def saga(self, saga_id: str) -> SagaResult:
        """The saga as it is now."""
        return SagaResult(
            saga_id=saga_id,
            state=await self.store.load(saga_id),
            history=tuple(await self.store.history(saga_id)),
            sent=tuple(m for m in self.publisher.sent if m.saga_id == saga_id),
            dead_letters=tuple(d for d in self.dead_letters if d.saga_id == saga_id),
        )

    # --- the loop ----------------------------------------------------------------------

    async def _drain(self) -> None:
        """Hand every published command to its participant and deliver the replies that
        are due, until nothing moves without the clock."""
        for _ in range(self.max_deliveries):
            if not self.publisher.commands:
                await self.dispatcher.flush()
                return
            await self._participant(self.publisher.commands.popleft())
        raise KitError(f"more than {self.max_deliveries} commands without the sagas waiting")

    async def _participant(self, command: SentMessage) -> None:
        step, role = await self._step_of(command)
        key = (command.saga_id, command.type)
        self._sends[key] += 1
        script = self._scripts.get(type(command.message), _DEFAULT)
        behaviour = script[min(self._sends[key], len(script)) - 1]
        if behaviour.refusal:
            if role != "success":
                raise ScriptError(
                    f"refuse() for {command.type}: a compensation cannot be refused; "
                    "use no_reply() to make it fail"
                )
            role = "failure"
        answer = behaviour.reply_to(command.message, _expected(step, role), role)
        if answer is None:
            return
        out = _Reply(
            saga_id=command.saga_id,
            message=_wire(answer),
            message_id=f"{command.message_id}:reply",
            causation_id=command.message_id,
        )
        for _ in range(behaviour.copies):
            if behaviour.after:
                due = self.clock.now + timedelta(seconds=behaviour.after)
                heapq.heappush(self._held, (due, next(self._seq), out))
            else:
                await self._reply(out)

    async def _step_of(self, command: SentMessage) -> tuple[Step, Expected]:
        """The step (of the saga's own definition) a command belongs to, and the reply
        role it expects: success for the step's command, compensated for its undo."""
        definition = self.runtime.definition_of(await self.store.load(command.saga_id))
        for step in definition.steps:
            if type(command.message) is step.command_type:
                return step, "success"
            if type(command.message) is step.compensation_type:
                return step, "compensated"
        raise KitError(f"{command.type} belongs to no step of {definition.key}")

    async def _reply(self, out: _Reply) -> None:
        await self._receive(
            Envelope(
                message=out.message,
                message_id=out.message_id,
                correlation_id=out.saga_id,
                causation_id=out.causation_id,
                headers={HANDLER_ATTEMPTS: 1},
            )
        )

    async def _receive(self, envelope: Envelope) -> None:
        """The orchestrator's consumer: bad input is dead-lettered, not raised."""
        try:
            await self.runtime.handle(envelope)
        except MalformedMessage as e:
            self.dead_letters.append(
                DeadLetter(
                    saga_id=envelope.correlation_id,
                    message=envelope.message,
                    message_id=envelope.message_id,
                    reason=e.reason,
                    detail=e.detail,
                )
            )

    async def _run_clock(self, *, until: datetime | None, limit: int = 1_000_000) -> None:
        for _ in range(limit):
            moment = await self._next_moment(until)
            if moment is None:
                break
            self.clock.set(max(moment, self.clock.now))
            # Replies that arrived by now are delivered before the deadline fires.
            while self._held and self._held[0][0] <= self.clock.now:
                await self._reply(heapq.heappop(self._held)[2])
                await self._drain()
            for due in await self.store.due_deadlines(now=self.clock.now, limit=10_000):
                if not due.live:
                    await self.store.clear_deadlines([due.commit_id])
                elif await self.runtime.on_deadline(due) is None:
                    raise KitError(f"the deadline of {due.saga_id} v{due.version} changed nothing")
                await self._drain()
        else:
            raise KitError(f"still not idle after {limit} deadlines and late replies")
        if until is not None:
            self.clock.set(max(until, self.clock.now))

    async def _next_moment(self, until: datetime | None) -> datetime | None:
        """The time of the next armed deadline or late reply (no later than ``until``)."""
        moments = [await self.store.next_deadline(), self._held[0][0] if self._held else None]
        due = [m for m in moments if m is not None and (until is None or m <= until)]
        return min(due) if due else None

    def _later(self) -> datetime:
        """A clock far enough ahead that every unconfirmed outbox is overdue."""
        return self.clock.now + timedelta(days=365)


def _expected(step: Step, role: Expected) -> type[Message]:
    """The reply type a step names for ``role``."""
    if role == "success":
        return step.success
    if role == "failure":
        if step.failure is None:
            raise ScriptError(
                f"step {step.name!r} is retriable and has no refusal reply: script it with "
                "reply() or no_reply()"
            )
        return step.failure
    assert step.compensated is not None  # only compensation commands expect it
    return step.compensated


def _wire(message: Message) -> Message:
    """The message as a consumer reads it off the wire (encoded, decoded, validated)."""
    return decode(message.TYPE, encode(message))
