"""The saga runtime: load, decide, append one commit, publish its outbox.

Per message: the saga's state comes from a bounded cache or is replayed from the store;
its definition is looked up in the registry by the name and version stored with the saga
(a start command picks the newest version of the saga it starts); ``decide`` says what
happens; the events and the messages to send are appended as one commit (one store
write); then the outbox is published with confirms. A version conflict (another
orchestrator instance got there first) reloads and decides again; a message already
processed is acknowledged without effect.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from pydantic import ValidationError

from contracts import MalformedMessage, ProgressEvent, SagaProgressed
from orchestrator.errors import ConcurrencyConflict, DuplicateMessage, SagaNotServed
from orchestrator.messaging.envelope import HANDLER_ATTEMPTS, SAGA_VERSION, header_int
from orchestrator.observability import metrics, tracing
from orchestrator.runtime.locks import KeyedLocks
from orchestrator.saga.commits import Commit, DueDeadline, OutboxEntry
from orchestrator.saga.decide import (
    Decision,
    Incoming,
    Outgoing,
    decide,
    decide_resume,
    decide_timeout,
    outcome_key,
)
from orchestrator.saga.state import SagaEvent, SagaState, apply_commit

if TYPE_CHECKING:
    from contracts import Message
    from orchestrator.messaging.envelope import Envelope
    from orchestrator.ports import SagaStore
    from orchestrator.runtime.outbox import Dispatcher
    from orchestrator.saga.definition import SagaDefinition
    from orchestrator.saga.registry import SagaRegistry

__all__ = ["RuntimeStats", "SagaRuntime", "progress_event", "utcnow"]

log = structlog.get_logger("runtime")

Decider = Callable[[SagaState, datetime], Decision]


def progress_event(state: SagaState, events: tuple[SagaEvent, ...]) -> Outgoing:
    """The read side's copy of one commit: its events and the saga's state after it."""
    message = SagaProgressed(
        saga_name=state.saga_name,
        saga_version=state.saga_version,
        version=state.version,
        status=state.status.value if state.status else "unknown",
        step=state.step,
        reference=state.reference,
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
        routing_key=outcome_key(state.saga_name, "progressed"),
    )


def _bad_input(reason: str) -> MalformedMessage | None:
    """Ignored messages that can only be bad input go to the dead-letter queue: a reply for
    a saga that does not exist (its commit is always stored before the command is sent)
    or a message that is no reply of this saga at all."""
    if reason == "unknown_saga":
        return MalformedMessage("unknown_saga", "no saga with this correlation id exists")
    if reason == "conflicting_start":
        return MalformedMessage(
            "conflicting_start",
            "a saga with this id was started with a different start command "
            "(a reused saga id or idempotency key?)",
        )
    if reason.startswith("not_a_reply_of_saga"):
        return MalformedMessage("unknown_type", f"not a message this saga handles ({reason})")
    return None


def _ends(before: SagaState, after: SagaState) -> bool:
    """Whether this commit ends a saga the store counts in flight (its start is marked)."""
    if after.status is None or not after.status.terminal or not after.counted:
        return False
    return before.status is None or not before.status.terminal


def _same_start(state: SagaState, message: Message) -> bool:
    """Whether ``message`` is the start command the saga was started with (a copy sent
    again with another message id is harmless; a different one is a conflict)."""
    if message.model_dump(mode="json") == dict(state.data):
        return True
    try:  # stored by an older contract version: compare as the current one reads it
        return type(message).model_validate(dict(state.data)) == message
    except ValidationError:
        return False


def utcnow() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


TOMBSTONE_RECHECK = 30.0
"""Seconds between checks whether a store without tombstones got its first one."""


@dataclass
class RuntimeStats:
    """Counters an operator (and the tests) can read."""

    commits: int = 0
    conflicts: int = 0
    duplicates: int = 0
    ignored: int = 0
    timeouts: int = 0
    stale_reloads: int = 0
    not_served: int = 0
    """Messages left for another instance (a saga version this one does not serve)."""
    ignored_by_reason: Counter[str] = field(default_factory=Counter)


class SagaRuntime:
    """Runs the sagas of every definition in its registry."""

    def __init__(
        self,
        *,
        registry: SagaRegistry,
        store: SagaStore,
        dispatcher: Dispatcher,
        clock: Callable[[], datetime] = utcnow,
        publish_progress: bool = True,
        cache_size: int = 10_000,
        max_conflict_retries: int = 50,
    ) -> None:
        self.registry = registry
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.publish_progress = publish_progress
        self.cache_size = cache_size
        self.max_conflict_retries = max_conflict_retries
        self.stats = RuntimeStats()
        self._cache: OrderedDict[str, SagaState] = OrderedDict()
        self._locks = KeyedLocks()
        self._store_has_pruned = False
        self._tombstones_checked = -float("inf")
        self.tombstone_recheck = TOMBSTONE_RECHECK

    def definition_of(self, state: SagaState) -> SagaDefinition:
        """The definition a started saga runs on: the name and version stored with it."""
        if not self.registry.knows(state.saga_name, state.saga_version):
            # A stray or late reply of a saga that ended on a version no longer served:
            # the newest version of its saga decides it (a late success is still
            # compensated); waiting for an instance that serves the old one would wait
            # forever once no saga of that version is in flight.
            # Only a newer version that has every step the saga did or awaits: an older
            # one (during the rollout of a newer release) might not know a step whose
            # late success must be undone; that message waits for an instance that does.
            ended = state.status is not None and state.status.terminal
            if ended and self.registry.knows(state.saga_name):
                newest = self.registry.get(state.saga_name)
                steps = {*state.done, *(a.step for a in state.awaiting)}
                if newest.version > state.saga_version and all(newest.has_step(s) for s in steps):
                    return newest
            raise SagaNotServed(
                f"saga {state.saga_id} runs on {state.saga_name}@v{state.saga_version}, "
                f"which this orchestrator does not serve ({', '.join(self.registry.names)})"
            )
        return self.registry.get(state.saga_name, state.saga_version)

    def _start_definition(self, envelope: Envelope) -> SagaDefinition | None:
        """The definition a start command asks for: the newest version of the saga it
        starts, or the version named in its ``x-saga-version`` header."""
        newest = self.registry.for_start(envelope.message)
        if newest is None:
            return None
        raw = envelope.headers.get(SAGA_VERSION)
        if raw is None:
            return newest
        version = header_int(raw, 0)
        if version > newest.version:
            # A newer orchestrator of a rolling deploy may serve it: leave it for that one.
            raise SagaNotServed(
                f"{SAGA_VERSION}={raw!r}: {newest.name} is served up to v{newest.version} here"
            )
        if not self.registry.knows(newest.name, version):
            raise MalformedMessage(
                "unknown_version",
                f"{SAGA_VERSION}={raw!r}: {newest.name} has versions "
                f"{', '.join(str(v) for v in self.registry.versions(newest.name))}",
            )
        return self.registry.get(newest.name, version)

    async def handle(self, envelope: Envelope) -> None:
        """Process one message for the saga named by its correlation id. A message of a
        saga (or a start naming a version) this instance does not serve raises
        ``SagaNotServed``: the consumer leaves it for another instance, uncounted."""
        try:
            await self._handle(envelope)
        except SagaNotServed as e:
            self.stats.not_served += 1
            log.info("saga_not_served_here", saga_id=envelope.correlation_id, reason=str(e))
            raise

    async def _pruned(self, saga_id: str) -> bool:
        """Whether retention removed this saga. No round trip until the store has any
        tombstone (asked again every ``tombstone_recheck`` seconds); one lookup by id
        per start after that. So in the first half minute after the first prune ever of
        a deployment, a start sent again for a saga pruned then may still run it."""
        if not self._store_has_pruned:
            now = time.monotonic()
            if now - self._tombstones_checked < self.tombstone_recheck:
                return False
            self._store_has_pruned = await self.store.has_pruned()
            self._tombstones_checked = now  # only once it answered: a failure asks again
            if not self._store_has_pruned:
                return False
        return await self.store.pruned(saga_id)

    async def _handle(self, envelope: Envelope) -> None:
        incoming = Incoming(
            message=envelope.message,
            message_id=envelope.message_id,
            attempts=header_int(envelope.headers.get(HANDLER_ATTEMPTS), 1),
        )
        starts = self._start_definition(envelope)
        if starts is not None and await self._pruned(envelope.correlation_id):
            # Retention removed this saga: a start sent again (an API retry with the
            # same key, a replay) must not run it a second time.
            self.stats.ignored += 1
            self.stats.ignored_by_reason["pruned"] += 1
            log.info("start_of_pruned_saga_ignored", saga_id=envelope.correlation_id)
            return

        def decider(state: SagaState, now: datetime) -> Decision:
            if state.started:
                decision = decide(self.definition_of(state), state, incoming, now=now)
                # A start for a saga that exists: harmless if it is the same command
                # again (even under another message id); a different one is bad input.
                again = decision.ignored in ("already_started", "duplicate")
                if (
                    again
                    and starts is not None
                    and starts.name == state.saga_name
                    and not _same_start(state, envelope.message)
                ):
                    return Decision(ignored="conflicting_start")
                return decision
            if starts is None:
                return Decision(ignored="unknown_saga")
            return decide(starts, state, incoming, now=now)

        commit = await self.apply(
            envelope.correlation_id,
            decider,
            causation_id=envelope.message_id,
            assume_new=starts is not None,
            reject=_bad_input,
        )
        if commit is not None:
            tracing.step_replied(envelope.causation_id, commit)  # tracing: step span ends
            await self.dispatcher.dispatch(commit)

    async def on_deadline(self, due: DueDeadline) -> Commit | None:
        """A stored deadline passed: resend, time the step out, or park the saga.
        Instances racing on one deadline produce one commit (same causation id)."""

        def decider(state: SagaState, now: datetime) -> Decision:
            if state.version != due.version:
                return Decision(ignored="stale_deadline")
            return decide_timeout(self.definition_of(state), state, now=now)

        commit = await self.apply(due.saga_id, decider, causation_id=f"deadline:{due.version}")
        if commit is not None:
            tracing.step_replied(None, commit)  # tracing: a timed-out step's span ends
            self.stats.timeouts += 1
            log.warning(
                "step_deadline_passed",
                saga_id=due.saga_id,
                events=[e.type.value for e in commit.events],
            )
            await self.dispatcher.dispatch(commit)
        return commit

    async def resume(self, saga_id: str) -> Commit | None:
        """Resume a parked saga (an operator's decision): a compensation_failed one's
        compensation, or a completing_stuck one's retriable step, each with a fresh
        budget. None if the saga is not parked."""
        state = await self.store.load(saga_id)
        commit = await self.apply(
            saga_id,
            lambda s, now: (
                decide_resume(self.definition_of(s), s, now=now)
                if s.started
                else Decision(ignored="unknown_saga")
            ),
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
                    metrics.stale_reload(state.saga_name)
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
                    with tracing.storing(commit):  # tracing: the commit's span
                        await self.store.append(commit)
                except ConcurrencyConflict:
                    self.stats.conflicts += 1
                    metrics.version_conflict(commit.saga_name)
                    log.info("saga_version_conflict", saga_id=saga_id, version=commit.version)
                    state, fresh = None, False
                    continue
                except DuplicateMessage:
                    self.stats.duplicates += 1
                    metrics.mark_duplicate()
                    self._cache.pop(saga_id, None)
                    log.info("message_already_processed", saga_id=saga_id)
                    return None
                self._remember(saga_id, after)
                self.stats.commits += 1
                metrics.observe_commit(state, after, decision.events)
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
        trace = tracing.carrier()  # tracing: stored with the outbox, for the relay
        if self.publish_progress:
            outbox.append(progress_event(after, decision.events))
        commit = Commit(
            saga_id=state.saga_id,
            saga_name=after.saga_name,
            saga_version=after.saga_version,
            starts=not state.started and after.started,
            ends=_ends(state, after),
            version=version,
            causation_id=causation_id,
            events=decision.events,
            outbox=tuple(OutboxEntry.of(o, trace=trace) for o in outbox),
            created_at=self.clock(),
            deadline=after.deadline,
            status=after.status.value if after.status else None,
        )
        return commit, after

    def _ignore(self, saga_id: str, decision: Decision) -> None:
        reason = decision.ignored or "no_change"
        if reason == "duplicate":
            self.stats.duplicates += 1
            metrics.mark_duplicate()
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
