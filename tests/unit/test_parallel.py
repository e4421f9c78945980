"""Parallel groups through ``decide`` / ``decide_timeout``: the toy saga
prep -> (left, right[, middle]) in parallel -> finish -> settle (retriable).

Each step has ``timeout=10`` and ``max_sends=2``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from dataclasses import dataclass, field

import pytest

from contracts import Message
from orchestrator.saga.decide import Decision, parse_command_id
from orchestrator.saga.state import EventType, SagaState, Status, replay
from tests.unit.saga_run import NOW, SagaRun, event_types, seconds
from tests.unit.toy_saga import GROUPS, TIMEOUT, Toy, start, toy_saga

E = EventType
PREP, LEFT, MIDDLE, RIGHT, FINISH, SETTLE = (
    Toy(n) for n in ("prep", "left", "middle", "right", "finish", "settle")
)


def in_group(group: int = 2) -> SagaRun:
    """prep succeeded: the group's commands are out."""
    run = SagaRun(definition=toy_saga(group))
    run.receive(start(), message_id="start-1")
    run.receive(PREP.done(), message_id="prep-done")
    return run


def commands(decision: Decision) -> list[tuple[str, str]]:
    """(step, do|undo) of every command a decision sends."""
    out = []
    for o in decision.outbox:
        if o.kind == "command":
            parsed = parse_command_id(o.message_id)
            assert parsed is not None, o.message_id
            out.append((parsed[1], parsed[2]))
    return out


# --- the group starts and succeeds together -------------------------------------------


@pytest.mark.parametrize("group", [2, 3])
def test_the_group_commands_leave_in_one_commit_with_a_deadline_each(group: int) -> None:
    run = SagaRun(definition=toy_saga(group))
    run.receive(start(), message_id="start-1")

    decision = run.receive(PREP.done())

    members = list(GROUPS[group])
    assert event_types(decision) == [E.STEP_SUCCEEDED] + [E.STEP_STARTED] * group
    assert [e.step for e in decision.events[1:]] == members
    assert all(e.data["group"] == "together" for e in decision.events[1:])
    assert commands(decision) == [(m, "do") for m in members]
    assert [a.step for a in run.state.awaiting] == members
    assert {a.deadline for a in run.state.awaiting} == {NOW + seconds(TIMEOUT)}
    assert run.state.step == "+".join(members)
    assert run.state.deadline == NOW + seconds(TIMEOUT)


def test_the_saga_moves_on_only_when_every_step_of_the_group_succeeded() -> None:
    run = in_group(3)

    first = run.receive(RIGHT.done())
    second = run.receive(LEFT.done())
    last = run.receive(MIDDLE.done())

    assert event_types(first) == event_types(second) == [E.STEP_SUCCEEDED]
    assert first.outbox == second.outbox == ()
    assert event_types(last) == [E.STEP_SUCCEEDED, E.STEP_STARTED]
    assert commands(last) == [("finish", "do")]
    assert run.state.done == ("prep", "right", "left", "middle")


def test_each_step_of_the_group_is_resent_on_its_own_deadline() -> None:
    run = in_group(2)
    run.receive(LEFT.done(), now=NOW + seconds(1))

    decision = run.timeout(NOW + seconds(TIMEOUT))

    assert event_types(decision) == [E.COMMAND_RESENT]
    assert decision.events[0].step == "right"
    assert commands(decision) == [("right", "do")]
    assert run.state.pending("right") is not None
    assert run.state.pending("left") is None


def test_the_saga_deadline_is_the_earliest_of_the_group_and_each_step_keeps_its_own() -> None:
    saga = toy_saga(2)
    slow_right = dataclasses.replace(saga.step("right"), timeout=3 * TIMEOUT)
    steps = tuple(slow_right if s.name == "right" else s for s in saga.steps)
    run = SagaRun(definition=dataclasses.replace(saga, steps=steps))
    run.receive(start())
    run.receive(PREP.done())
    assert run.state.deadline == NOW + seconds(TIMEOUT)

    resent = run.expire()
    assert [e.step for e in resent.events] == ["left"]
    assert run.state.deadline == NOW + seconds(2 * TIMEOUT + 1)

    left_out = run.expire()
    assert event_types(left_out) == [E.STEP_TIMED_OUT, E.COMPENSATION_STARTED]
    assert commands(left_out) == [("left", "undo")]
    assert run.state.pending("right") is not None, "right keeps its own deadline"

    right_out = run.timeout(NOW + seconds(3 * TIMEOUT))
    assert event_types(right_out) == [E.STEP_TIMED_OUT, E.COMPENSATION_STARTED]
    assert commands(right_out) == [("right", "undo")]


def test_two_deadlines_due_together_are_handled_in_one_decision() -> None:
    run = in_group(3)

    decision = run.timeout(NOW + seconds(TIMEOUT))

    assert event_types(decision) == [E.COMMAND_RESENT] * 3
    assert commands(decision) == [("left", "do"), ("middle", "do"), ("right", "do")]


# --- one refuses ----------------------------------------------------------------------


def test_a_refusal_compensates_the_succeeded_steps_of_the_group_at_once() -> None:
    run = in_group(3)
    run.receive(LEFT.done())
    run.receive(MIDDLE.done())

    decision = run.receive(RIGHT.refused("sold out"))

    assert event_types(decision) == [E.STEP_FAILED, E.COMPENSATION_STARTED, E.COMPENSATION_STARTED]
    assert commands(decision) == [("left", "undo"), ("middle", "undo")]
    assert run.state.status is Status.COMPENSATING
    assert (run.state.failed_step, run.state.reason) == ("right", "sold out")


def test_steps_before_the_group_wait_until_the_whole_group_is_undone() -> None:
    run = in_group(3)
    run.receive(LEFT.done())
    run.receive(MIDDLE.done())
    run.receive(RIGHT.refused())

    left = run.receive(LEFT.undone())
    middle = run.receive(MIDDLE.undone())
    prep = run.receive(PREP.undone())

    assert event_types(left) == [E.STEP_COMPENSATED]
    assert commands(left) == []
    assert event_types(middle) == [E.STEP_COMPENSATED, E.COMPENSATION_STARTED]
    assert commands(middle) == [("prep", "undo")]
    assert event_types(prep) == [E.STEP_COMPENSATED, E.SAGA_COMPENSATED]
    assert run.state.undone == ("left", "middle", "prep")


def test_a_step_still_waiting_when_another_refuses_is_undone_once_it_succeeds() -> None:
    run = in_group(2)
    run.receive(LEFT.refused())
    assert run.state.status is Status.COMPENSATING
    assert commands(run.decisions[-1]) == []  # nothing to undo yet: right may still happen

    late = run.receive(RIGHT.done())

    assert event_types(late) == [E.STEP_SUCCEEDED, E.COMPENSATION_STARTED]
    assert late.events[0].data["late"] is True
    assert commands(late) == [("right", "undo")]


def test_a_step_still_waiting_when_another_refuses_is_undone_when_it_times_out() -> None:
    run = in_group(2)
    run.receive(LEFT.refused())

    decision = run.expire()

    # not resent: the saga no longer wants it done; undone in case it happened
    assert event_types(decision) == [E.STEP_TIMED_OUT, E.COMPENSATION_STARTED]
    assert decision.events[0].attempt == 1
    assert commands(decision) == [("right", "undo")]
    assert run.state.failed_step == "left", "the first failure stays the saga's reason"


def test_a_second_refusal_is_recorded_and_not_acted_on_twice() -> None:
    run = in_group(3)
    run.receive(LEFT.done())
    run.receive(RIGHT.refused("first"))

    second = run.receive(MIDDLE.refused("second"))

    assert event_types(second) == [E.STEP_FAILED]
    assert second.events[0].data["again"] is True
    assert commands(second) == []
    assert (run.state.failed_step, run.state.reason) == ("right", "first")
    assert [a.step for a in run.state.awaiting] == ["left"]


def test_every_step_of_the_group_refused_fails_the_group_and_undoes_prep() -> None:
    run = in_group(2)
    run.receive(LEFT.refused())

    decision = run.receive(RIGHT.refused())

    assert event_types(decision) == [E.STEP_FAILED, E.COMPENSATION_STARTED]
    assert commands(decision) == [("prep", "undo")]


def test_a_group_that_is_the_first_stage_fails_when_every_step_refused() -> None:
    saga = toy_saga(2)
    first_group = type(saga)(
        name="toy", start=saga.start, steps=saga.steps[1:], reference=saga.reference
    )
    run = SagaRun(definition=first_group)
    run.receive(start())
    run.receive(LEFT.refused())

    decision = run.receive(RIGHT.refused())

    assert event_types(decision) == [E.STEP_FAILED, E.SAGA_FAILED]
    assert run.state.status is Status.FAILED


def test_compensations_of_a_group_time_out_each_and_a_failing_one_parks_the_saga() -> None:
    run = in_group(2)
    run.receive(LEFT.done())
    run.receive(RIGHT.done())
    run.receive(FINISH.refused())  # the group is undone in parallel
    assert commands(run.decisions[-1]) == [("left", "undo"), ("right", "undo")]

    run.receive(LEFT.undone())
    resent = run.expire()
    parked = run.expire()

    assert commands(resent) == [("right", "undo")]
    assert event_types(parked) == [E.SAGA_PARKED]
    assert parked.events[0].data["phase"] == "compensation"
    assert run.state.status is Status.COMPENSATION_FAILED
    assert run.state.step == "right"

    resumed = run.resume(NOW + seconds(3600))
    assert event_types(resumed) == [E.SAGA_RESUMED, E.COMPENSATION_STARTED]
    assert commands(resumed) == [("right", "undo")]
    assert run.state.status is Status.COMPENSATING
    run.receive(RIGHT.undone())
    assert commands(run.decisions[-1]) == [("prep", "undo")]


def test_a_parked_compensation_keeps_the_stage_before_waiting_while_others_answer() -> None:
    run = in_group(3)
    for member in (LEFT, MIDDLE, RIGHT):
        run.receive(member.done())
    run.receive(FINISH.refused())
    run.receive(LEFT.undone())
    run.give_up()  # middle and right: resent, then parked
    assert run.state.status is Status.COMPENSATION_FAILED
    assert run.state.parked_steps == ("middle", "right")

    middle = run.receive(MIDDLE.undone())
    assert event_types(middle) == [E.STEP_COMPENSATED]
    assert run.state.status is Status.COMPENSATION_FAILED, "right is still parked"

    right = run.receive(RIGHT.undone())
    assert event_types(right) == [E.STEP_COMPENSATED, E.COMPENSATION_STARTED]
    assert run.state.status is Status.COMPENSATING


# --- every combination of outcomes ----------------------------------------------------

OUTCOMES = ("succeed", "refuse", "time_out", "late", "duplicate")
"""What one step of the group does: answers with a success; refuses; never answers; never
answers in time, then succeeds after it timed out; answers with a success twice."""


@dataclass
class Drive:
    """Plays the participants: answers the group as told, answers every compensation
    once (a compensation sent again reuses its id and gets the same reply), and lets
    deadlines pass when nothing else happens."""

    run: SagaRun
    outcomes: dict[str, str]
    undo_queue: deque[str] = field(default_factory=deque)
    undo_answered: set[str] = field(default_factory=set)
    late_sent: set[str] = field(default_factory=set)
    duplicates: list[Decision] = field(default_factory=list)

    def reply(self, step: str, message: Message, message_id: str) -> None:
        self.watch(self.run.receive(message, message_id=message_id))

    def watch(self, decision: Decision) -> None:
        self.undo_queue.extend(step for step, kind in commands(decision) if kind == "undo")

    def answer_immediately(self, order: list[str]) -> None:
        for step in order:
            outcome = self.outcomes[step]
            toy = Toy(step)
            if outcome in ("succeed", "duplicate"):
                self.reply(step, toy.done(), f"{step}:do:reply")
            elif outcome == "refuse":
                self.reply(step, toy.refused(f"{step} says no"), f"{step}:do:reply")
            if outcome == "duplicate":
                self.duplicates.append(self.run.receive(toy.done(), message_id=f"{step}:do:reply"))

    def until_settled(self) -> None:
        for _ in range(100):
            if self.run.state.status is not None and self.run.state.status.terminal:
                return
            if self.undo_queue:
                step = self.undo_queue.popleft()
                self.undo_answered.add(step)
                self.reply(step, Toy(step).undone(), f"{step}:undo:reply")
            elif late := self._late_due():
                self.late_sent.add(late)
                self.reply(late, Toy(late).done(), f"{late}:do:reply")
            elif self.run.state.pending("finish"):
                self.reply("finish", FINISH.done(), "finish:do:reply")
            elif self.run.state.pending("settle"):
                self.reply("settle", SETTLE.done(), "settle:do:reply")
            elif self.run.state.deadline is not None:
                self.watch(self.run.expire())
            else:
                return

    def _late_due(self) -> str | None:
        timed_out = {
            e.step for d in self.run.decisions for e in d.events if e.type is E.STEP_TIMED_OUT
        }
        for step, outcome in self.outcomes.items():
            if outcome == "late" and step in timed_out and step not in self.late_sent:
                return step
        return None


def _events(run: SagaRun) -> list[tuple[EventType, str | None, dict[str, object]]]:
    return [(e.type, e.step, dict(e.data)) for d in run.decisions for e in d.events]


CASES = [
    (size, combo, order)
    for size in (2, 3)
    for combo in itertools.product(OUTCOMES, repeat=size)
    for order in ("in_order", "reversed")
]


@pytest.mark.parametrize(
    ("size", "combo", "order"),
    CASES,
    ids=[f"{size}-{'-'.join(combo)}-{order}" for size, combo, order in CASES],
)
def test_every_combination_of_outcomes_in_a_group(
    size: int, combo: tuple[str, ...], order: str
) -> None:
    members = list(GROUPS[size])
    outcomes = dict(zip(members, combo, strict=True))
    drive = Drive(run=in_group(size), outcomes=outcomes)

    drive.answer_immediately(members if order == "in_order" else members[::-1])
    drive.until_settled()

    run, state = drive.run, drive.run.state
    events = _events(run)
    assert all(d.ignored == "duplicate" for d in drive.duplicates)
    assert replay(state.saga_id, run.commits) == state
    assert state.awaiting == ()
    if all(o in ("succeed", "duplicate") for o in combo):
        assert state.status is Status.COMPLETED
        assert set(members) <= set(state.done)
        assert not any(t is E.COMPENSATION_STARTED for t, _, _ in events)
        return
    _assert_group_undone(state, events, outcomes, drive)


def _assert_group_undone(
    state: SagaState,
    events: list[tuple[EventType, str | None, dict[str, object]]],
    outcomes: dict[str, str],
    drive: Drive,
) -> None:
    assert state.status is Status.COMPENSATED
    assert state.done == ()
    undo_sent = {step for d in drive.run.decisions for step, kind in commands(d) if kind == "undo"}
    for step, outcome in outcomes.items():
        # undone if it may have happened; a refused step is never undone
        assert (step in undo_sent) is (outcome != "refuse"), (step, outcome)
    assert "prep" in undo_sent
    # prep is compensated once, after every step of the group was settled
    prep_started = [
        i for i, (t, s, _) in enumerate(events) if (t, s) == (E.COMPENSATION_STARTED, "prep")
    ]
    assert len(prep_started) == 1
    group_settled = [
        i
        for i, (t, s, _) in enumerate(events)
        if s in outcomes and t in (E.STEP_COMPENSATED, E.STEP_FAILED, E.STEP_TIMED_OUT)
    ]
    assert max(group_settled) < prep_started[0]
    # the saga's failure is the first one; later ones are recorded with 'again'
    failures = [(s, d) for t, s, d in events if t in (E.STEP_FAILED, E.STEP_TIMED_OUT)]
    assert state.failed_step == failures[0][0]
    assert len(failures) == sum(o in ("refuse", "time_out", "late") for o in outcomes.values())
    # no step's command is sent again once the group failed
    first_failure = next(
        i for i, (t, _, _) in enumerate(events) if t in (E.STEP_FAILED, E.STEP_TIMED_OUT)
    )
    assert not any(
        t is E.COMMAND_RESENT and not d["compensation"] for t, _, d in events[first_failure:]
    )
    assert not any(t is E.STEP_STARTED and s == "finish" for t, s, _ in events)
