"""The timeline ``saga status`` prints: parallel steps marked, the pivot, retriable steps."""

from __future__ import annotations

from orchestrator.ops.timeline import timeline_lines
from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.saga.decide import Decision
from tests.unit.saga_run import NOW, SagaRun, shipping_refused
from tests.unit.test_parallel import FINISH, LEFT, PREP, RIGHT, SETTLE
from tests.unit.toy_saga import start, toy_saga


def _commits(run: SagaRun) -> list[Commit]:
    """The run's decisions as stored commits (progress events left out)."""
    commits = []
    version = 0
    for decision in run.decisions:
        if decision.ignored or not decision.events:
            continue
        version += 1
        commits.append(_commit(decision, version))
    return commits


def _commit(decision: Decision, version: int) -> Commit:
    return Commit(
        saga_id="saga-42",
        version=version,
        causation_id=f"c-{version}",
        events=decision.events,
        outbox=tuple(OutboxEntry.of(o) for o in decision.outbox),
        created_at=NOW,
    )


def _body(line: str) -> str:
    """A line without its time."""
    return line.split("  ", 1)[1].rstrip()


def test_steps_of_a_group_are_marked_and_each_shows_its_own_command() -> None:
    run = SagaRun(definition=toy_saga(2))
    for message in (start(), PREP.done(), LEFT.done(), RIGHT.refused("sold out")):
        run.receive(message)

    lines = [_body(x) for x in timeline_lines(_commits(run))]

    assert lines[3:] == [
        "v2   ‖ left             command sent in parallel (together)  (-> left.do_left.v1)",
        "v2   ‖ right            command sent in parallel (together)  (-> right.do_right.v1)",
        "v3   ‖ left             succeeded",
        "v4   ‖ right            refused  (sold out)",
        "v4   ‖ left             compensating  (-> left.undo_left.v1)",
    ]


def test_the_pivot_and_the_retriable_phase_are_shown() -> None:
    run = SagaRun(definition=toy_saga(2))
    for message in (start(), PREP.done(), LEFT.done(), RIGHT.done(), FINISH.done()):
        run.receive(message)
    run.give_up()
    run.resume(NOW)
    run.receive(SETTLE.done())

    text = "\n".join(_body(x) for x in timeline_lines(_commits(run)))

    assert "finish             succeeded: pivot passed, the saga only moves forward now" in text
    assert "settle             command sent, retriable  (-> settle.do_settle.v1)" in text
    assert "saga parked, completing stuck (past the pivot: resume to retry)" in text
    assert "command sent again (resumed), retriable" in text
    assert text.endswith("saga completed  (-> saga.completed.v2)")


def test_a_sequential_saga_reads_as_before() -> None:
    run = shipping_refused()

    lines = [_body(x) for x in timeline_lines(_commits(run))]

    assert lines[-3:] == [
        "v3   schedule_shipment  command sent  (-> shipping.schedule_shipment.v1)",
        "v4   schedule_shipment  refused  (address unreachable)",
        "v4   authorize_payment  compensating  (-> payment.void_payment.v1)",
    ]
    assert "‖" not in "".join(lines)
