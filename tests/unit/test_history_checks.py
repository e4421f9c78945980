"""The generic history invariants of the harness, on histories made by the real
``decide`` (they hold) and on hand-built ones that break each (they are found)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from contracts import (
    Message,
    OrderLine,
    PaymentRefunded,
    RefundCancelled,
    RefundRefused,
    RequestReturn,
    ReturnAccepted,
    ReturnCancelled,
    StockTakenBack,
    TakeBackUndone,
)
from orchestrator.dev.harness.history_checks import (
    compensation_order,
    no_command_after_end,
    steps_answered,
)
from orchestrator.packs.order_return import order_return
from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.saga.decide import Decision, Incoming, decide, decide_timeout
from orchestrator.saga.definition import SagaDefinition
from orchestrator.saga.state import (
    Awaiting,
    EventType,
    SagaEvent,
    SagaState,
    Status,
    apply_commit,
    replay,
)

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
SAGA = order_return(timeout=10, max_sends=1)
RID = "ret-1"


class History:
    """A return saga driven through ``decide``, committed the way the runtime does."""

    def __init__(self, saga: SagaDefinition = SAGA) -> None:
        self.saga = saga
        self.state = SagaState(saga_id="saga-1")
        self.commits: list[Commit] = []
        self.now = NOW

    def feed(self, message: Message) -> History:
        incoming = Incoming(message=message, message_id=f"m{len(self.commits)}-{message.TYPE}")
        decision = decide(self.saga, self.state, incoming, now=self.now)
        return self._commit(decision, incoming.message_id)

    def time_out(self) -> History:
        self.now += timedelta(seconds=11)
        decision = decide_timeout(self.saga, self.state, now=self.now)
        return self._commit(decision, f"deadline-{self.state.version}")

    def _commit(self, decision: Decision, causation: str) -> History:
        assert decision.ignored is None, decision.ignored
        version = self.state.version + 1
        self.commits.append(
            Commit(
                saga_id=self.state.saga_id,
                saga_name=self.saga.name,
                version=version,
                causation_id=causation,
                events=decision.events,
                outbox=tuple(OutboxEntry.of(o) for o in decision.outbox),
                created_at=self.now,
            )
        )
        self.state = apply_commit(self.state, version, causation, decision.events)
        return self


def started(saga: SagaDefinition = SAGA) -> History:
    return History(saga).feed(
        RequestReturn(
            return_id=RID,
            order_saga_id="order-1",
            lines=(OrderLine(sku="apple", quantity=1),),
            refund_cents=100,
        )
    )


def taken_back(saga: SagaDefinition = SAGA) -> History:
    return started(saga).feed(ReturnAccepted(return_id=RID)).feed(StockTakenBack(return_id=RID))


def refund_refused() -> History:
    """Refund refused: take-back undone, then the acceptance."""
    return (
        taken_back()
        .feed(RefundRefused(return_id=RID, reason="too much"))
        .feed(TakeBackUndone(return_id=RID))
        .feed(ReturnCancelled(return_id=RID))
    )


def late_refund() -> History:
    """The refund times out, everything is undone, then the refund's success arrives."""
    return (
        taken_back()
        .time_out()
        .feed(RefundCancelled(return_id=RID))
        .feed(TakeBackUndone(return_id=RID))
        .feed(ReturnCancelled(return_id=RID))
        .feed(PaymentRefunded(return_id=RID, refund_id="refund-1"))
    )


def all_checks(history: History) -> list[str]:
    commits = history.commits
    return [
        *compensation_order(SAGA, commits),
        *no_command_after_end(SAGA, commits),
        *steps_answered(history.state, commits),
    ]


def test_every_check_holds_for_histories_decide_makes() -> None:
    completed = taken_back().feed(PaymentRefunded(return_id=RID, refund_id="refund-1"))
    assert completed.state.status is Status.COMPLETED
    assert refund_refused().state.status is Status.COMPENSATED
    late = late_refund()
    assert late.state.status is Status.COMPENSATED
    assert any(e.type is EventType.LATE_SUCCESS_COMPENSATING for e in late.commits[-1].events)
    assert late.commits[-1].outbox, "the late success is compensated after the end"
    running = taken_back()
    assert running.state.deadline is not None

    for history in (completed, refund_refused(), late, running, started()):
        assert all_checks(history) == []


# --- compensation_order ---------------------------------------------------------------


def swap(commits: list[Commit], a: int, b: int) -> list[Commit]:
    """The two commits' events and outboxes exchanged (versions kept)."""
    first, second = commits[a], commits[b]
    commits = list(commits)
    commits[a] = replace(first, events=second.events, outbox=second.outbox)
    commits[b] = replace(second, events=first.events, outbox=first.outbox)
    return commits


def wrong_compensation_order() -> list[Commit]:
    """A refused refund after which the acceptance is undone before the take-back."""
    history = refund_refused()
    # commits: start, accepted, taken back, refused (-> undo take-back), undone (-> cancel
    # return), cancelled. Rebuild the compensation commits the other way round.
    refused, undone = history.commits[3], history.commits[4]
    wrong = list(history.commits)
    wrong[3] = replace(
        refused,
        events=(refused.events[0], replace(refused.events[1], step="accept_return")),
        outbox=undone.outbox,
    )
    wrong[4] = replace(
        undone,
        events=(
            replace(undone.events[0], step="accept_return"),
            replace(undone.events[1], step="take_back_stock"),
        ),
        outbox=refused.outbox,
    )
    last = history.commits[5]
    wrong[5] = replace(
        last, events=(replace(last.events[0], step="take_back_stock"), last.events[1])
    )
    return wrong


def test_compensations_out_of_reverse_order_are_found() -> None:
    """The acceptance undone before the take-back it preceded."""
    problems = compensation_order(SAGA, wrong_compensation_order())

    assert problems
    assert "expected in the order ['take_back_stock', 'accept_return']" in problems[0]


def test_a_compensated_saga_that_left_a_step_done_is_found() -> None:
    """Compensated, yet the acceptance was never undone."""
    history = refund_refused()
    last = history.commits[-1]
    skipped = list(history.commits[:-2])
    undone = history.commits[-2]
    skipped.append(replace(undone, events=(undone.events[0], *last.events[1:]), outbox=()))

    problems = compensation_order(SAGA, skipped)

    assert any("compensations ['take_back_stock']" in p for p in problems)


def test_a_compensation_without_a_failure_is_found() -> None:
    history = taken_back()
    bogus = SagaEvent(type=EventType.COMPENSATION_STARTED, at=NOW, step="accept_return")
    commits = [*history.commits[:-1], replace(history.commits[-1], events=(bogus,))]
    commits[-1] = replace(commits[-1], outbox=refund_refused().commits[4].outbox)

    assert compensation_order(SAGA, commits)


# --- no_command_after_end -------------------------------------------------------------


def command_after_end() -> list[Commit]:
    """A completed return, then a commit that sends the refund again."""
    completed = taken_back().feed(PaymentRefunded(return_id=RID, refund_id="refund-1"))
    refund_command = completed.commits[-2].outbox
    assert refund_command[0].type == "payment.refund_payment.v1"
    resent = SagaEvent(type=EventType.COMMAND_RESENT, at=NOW, step="refund_payment", attempt=2)
    extra = replace(
        completed.commits[-1],
        version=len(completed.commits) + 1,
        causation_id="stray",
        events=(resent,),
        outbox=refund_command,
    )
    return [*completed.commits, extra]


def test_a_command_sent_after_the_end_is_found() -> None:
    problems = no_command_after_end(SAGA, command_after_end())

    assert problems == [
        "saga saga-1 v5 sent payment.refund_payment.v1 (saga-1:refund_payment:do) after it ended"
    ]


def test_the_ending_commit_itself_may_send_no_command() -> None:
    completed = taken_back().feed(PaymentRefunded(return_id=RID, refund_id="refund-1"))
    last = completed.commits[-1]
    with_command = replace(last, outbox=(*completed.commits[-2].outbox, *last.outbox))

    assert no_command_after_end(SAGA, [*completed.commits[:-1], with_command])


def test_only_the_late_steps_own_compensation_is_allowed_after_the_end() -> None:
    """After the end, a late success may send its step's compensation, not another's."""
    late = late_refund()
    last = late.commits[-1]
    other = refund_refused().commits[4].outbox  # CancelReturn: not the late step's undo

    assert no_command_after_end(SAGA, late.commits) == []
    assert no_command_after_end(SAGA, [*late.commits[:-1], replace(last, outbox=other)])


# --- steps_answered -------------------------------------------------------------------


def unanswered_step() -> list[Commit]:
    """A return that says completed although its refund step never got its reply."""
    history = taken_back()
    ended = SagaEvent(type=EventType.SAGA_COMPLETED, at=NOW)
    last = history.commits[-1]
    return [*history.commits, replace(last, version=4, events=(ended,), outbox=())]


def test_a_step_without_its_reply_in_an_ended_saga_is_found() -> None:
    commits = unanswered_step()
    state = replay("saga-1", ((c.version, c.causation_id, c.events) for c in commits))
    assert state.status is Status.COMPLETED

    problems = steps_answered(state, commits)

    assert problems == ["saga saga-1 (completed) left step refund_payment without a reply"]


def test_a_running_step_without_a_deadline_is_found() -> None:
    history = taken_back()
    assert steps_answered(history.state, history.commits) == []

    stuck = replace(
        history.state, awaiting=tuple(replace(a, deadline=None) for a in history.state.awaiting)
    )

    assert steps_answered(stuck, history.commits) == [
        "saga saga-1 (running) left step refund_payment without a reply"
    ]


def test_a_parked_saga_may_wait_on_its_compensation_only() -> None:
    """Parked on the take-back's undo: that compensation may stay open, no other."""
    history = taken_back().feed(RefundRefused(return_id=RID, reason="no"))
    parked = replace(
        history.state,
        status=Status.COMPENSATION_FAILED,
        awaiting=(Awaiting(step="take_back_stock", undo=True),),
    )
    assert steps_answered(parked, history.commits) == []

    elsewhere = replace(parked, awaiting=(Awaiting(step="accept_return", undo=True),))

    assert steps_answered(elsewhere, history.commits) == [
        "saga saga-1 (compensation_failed) left compensation of take_back_stock without a reply"
    ]
