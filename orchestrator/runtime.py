"""The saga runtime: load, decide, append one commit, publish its outbox.

Per message: the saga's state comes from a bounded cache or is replayed from the store;
``decide`` says what happens; the events and the messages to send are appended as one
commit (one store write); then the outbox is published with confirms. A version conflict
(another orchestrator instance got there first) reloads and decides again; a message
already processed is acknowledged without effect.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from contracts import MalformedMessage, ProgressEvent, SagaProgressed
from orchestrator.decide import Decision, Incoming, Outgoing, decide, decide_resume, decide_timeout
from orchestrator.errors import ConcurrencyConflict, DuplicateMessage
from orchestrator.locks import KeyedLocks
from orchestrator.messaging.envelope import HANDLER_ATTEMPTS, header_int
from orchestrator.state import SagaEvent, SagaState, apply_commit
from orchestrator.store import Commit, DueDeadline, OutboxEntry

if TYPE_CHECKING:
    from orchestrator.definition import SagaDefinition
    from orchestrator.messaging.envelope import Envelope
    from orchestrator.outbox import Dispatcher
    from orchestrator.store import SagaStore

__all__ = ["RuntimeStats", "SagaRuntime", "progress_event", "utcnow"]

log = structlog.get_logger("runtime")

Decider = Callable[[SagaState, datetime], Decision]


def progress_event(state: SagaState, events: tuple[SagaEvent, ...]) -> Outgoing:
    """The read side's copy of one commit: its events and the saga's state after it."""
    message = SagaProgressed(
        saga_name=state.saga_name,
        version=state.version,
        status=state.status.value if state.status else "unknown",
        step=state.step,
        reference=str(state.data.get("order_id", "")),
        started_at=state.started_at,
        deadline=state.deadline,
        events=tuple(
            ProgressEvent(
                type=e.type.value,
                at=e.at,
                step=e.step,
                attempt=e.attempt,
                reason=str(e.data["reason"]) if e.data.get("reason") else None,
            )
            for e in events
        ),
        start=dict(state.data),
    )
    return Outgoing(
        kind="event",
        message=message,
        message_id=f"{state.saga_id}:v{state.version}",
        routing_key=f"{state.saga_name}.progressed",
    )


def _bad_input(reason: str) -> MalformedMessage | None:
    """Ignored messages that can only be bad input go to the dead-letter queue: a reply for
    a saga that does not exist (its commit is always stored before the command is sent)
    or a message that is no reply of this saga at all."""
    if reason == "unknown_saga":
        return MalformedMessage("unknown_saga", "no saga with this correlation id exists")
    if reason.startswith("not_a_reply_of_saga"):
        return MalformedMessage("unknown_type", f"not a message this saga handles ({reason})")
    return None


def utcnow() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


@dataclass
class RuntimeStats:
    """Counters an operator (and the tests) can read."""

    commits: int = 0
    conflicts: int = 0
    duplicates: int = 0
    ignored: int = 0
    timeouts: int = 0
    stale_reloads: int = 0
    ignored_by_reason: Counter[str] = field(default_factory=Counter)


class SagaRuntime:
    """Runs the sagas of one definition."""

    def __init__(
        self,
        *,
        saga: SagaDefinition,
        store: SagaStore,
        dispatcher: Dispatcher,
        clock: Callable[[], datetime] = utcnow,
        publish_progress: bool = True,
        cache_size: int = 10_000,
        max_conflict_retries: int = 50,
    ) -> None:
        self.saga = saga
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.publish_progress = publish_progress
        self.cache_size = cache_size
        self.max_conflict_retries = max_conflict_retries
        self.stats = RuntimeStats()
        self._cache: OrderedDict[str, SagaState] = OrderedDict()
        self._locks = KeyedLocks()

    async def handle(self, envelope: Envelope) -> None:
        """Process one message for the saga named by its correlation id."""
        incoming = Incoming(
            message=envelope.message,
            message_id=envelope.message_id,
            attempts=header_int(envelope.headers.get(HANDLER_ATTEMPTS), 1),
        )
        is_start = isinstance(envelope.message, self.saga.start)
        commit = await self.apply(
            envelope.correlation_id,
            lambda state, now: decide(self.saga, state, incoming, now=now),
            causation_id=envelope.message_id,
            assume_new=is_start,
            reject=_bad_input,
        )
        if commit is not None:
            await self.dispatcher.dispatch(commit)

    async def on_deadline(self, due: DueDeadline) -> Commit | None:
        """A stored deadline passed: resend, time the step out, or park the saga.
        Instances racing on one deadline produce one commit (same causation id)."""

        def decider(state: SagaState, now: datetime) -> Decision:
            if state.version != due.version:
                return Decision(ignored="stale_deadline")
            return decide_timeout(self.saga, state, now=now)

        commit = await self.apply(due.saga_id, decider, causation_id=f"deadline:{due.version}")
        if commit is not None:
            self.stats.timeouts += 1
            log.warning(
                "step_deadline_passed",
                saga_id=due.saga_id,
                events=[e.type.value for e in commit.events],
            )
            await self.dispatcher.dispatch(commit)
        return commit

    async def resume(self, saga_id: str) -> Commit | None:
        """Restart the compensation of a parked saga (an operator's decision).
        None if the saga is not parked."""
        state = await self.store.load(saga_id)
        commit = await self.apply(
            saga_id,
            lambda s, now: decide_resume(self.saga, s, now=now),
            causation_id=f"resume:{state.version}",
        )
        if commit is not None:
            log.info("saga_resumed", saga_id=saga_id)
            await self.dispatcher.dispatch(commit)
        return commit

    async def apply(
        self,
        saga_id: str,
        decider: Decider,
        *,
        causation_id: str,
        assume_new: bool = False,
        reject: Callable[[str], MalformedMessage | None] | None = None,
    ) -> Commit | None:
        """Decide against the latest state and append the result; None if nothing changed.

        ``assume_new`` skips the read for a saga that should not exist yet; if it does,
        the append conflicts and the saga is loaded after all.
        """
        async with self._locks(saga_id):
            state = self._cache.get(saga_id)
            fresh = False
            if state is None and assume_new:
                state = SagaState(saga_id=saga_id)
            for _ in range(self.max_conflict_retries):
                if state is None:
                    state, fresh = await self.store.load(saga_id), True
                decision = decider(state, self.clock())
                if decision.ignored and not fresh:
                    # A cached state may be stale (another instance moved the saga on):
                    # decide again on the stored one before ignoring anything.
                    self.stats.stale_reloads += 1
                    state = None
                    continue
                if decision.ignored or not decision.events:
                    self._ignore(saga_id, decision)
                    refusal = reject(decision.ignored or "") if reject else None
                    if refusal is not None:
                        raise refusal
                    return None
                commit, after = self._commit(state, decision, causation_id)
                try:
                    await self.store.append(commit)
                except ConcurrencyConflict:
                    self.stats.conflicts += 1
                    log.info("saga_version_conflict", saga_id=saga_id, version=commit.version)
                    state, fresh = None, False
                    continue
                except DuplicateMessage:
                    self.stats.duplicates += 1
                    self._cache.pop(saga_id, None)
                    log.info("message_already_processed", saga_id=saga_id)
                    return None
                self._remember(saga_id, after)
                self.stats.commits += 1
                return commit
        raise ConcurrencyConflict(
            f"saga {saga_id}: {self.max_conflict_retries} version conflicts in a row"
        )

    def _commit(
        self, state: SagaState, decision: Decision, causation_id: str
    ) -> tuple[Commit, SagaState]:
        """The commit for a decision, and the saga's state after it."""
        version = state.version + 1
        after = apply_commit(state, version, causation_id, decision.events)
        outbox = list(decision.outbox)
        if self.publish_progress:
            outbox.append(progress_event(after, decision.events))
        commit = Commit(
            saga_id=state.saga_id,
            version=version,
            causation_id=causation_id,
            events=decision.events,
            outbox=tuple(OutboxEntry.of(o) for o in outbox),
            created_at=self.clock(),
            deadline=after.deadline,
            status=after.status.value if after.status else None,
        )
        return commit, after

    def _ignore(self, saga_id: str, decision: Decision) -> None:
        reason = decision.ignored or "no_change"
        if reason == "duplicate":
            self.stats.duplicates += 1
        else:
            self.stats.ignored += 1
            self.stats.ignored_by_reason[reason.split(":", 1)[0]] += 1
        log.info("message_ignored", saga_id=saga_id, reason=reason)

    def _remember(self, saga_id: str, state: SagaState) -> None:
        self._cache[saga_id] = state
        self._cache.move_to_end(saga_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def forget(self, saga_id: str | None = None) -> None:
        """Drop cached state (one saga, or all): the next message replays from the store."""
        if saga_id is None:
            self._cache.clear()
        else:
            self._cache.pop(saga_id, None)
