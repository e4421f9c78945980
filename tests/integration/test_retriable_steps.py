"""Retriable steps over the real broker and store: driven forward until they succeed,
parked visibly when they keep failing, resumed by an operator, never compensated."""

from __future__ import annotations

import pytest

from orchestrator.client import new_saga_id
from orchestrator.saga.state import EventType, Status
from tests.faults import Broken, Flaky
from tests.integration.conftest import System, SystemFactory
from tests.integration.retriable_saga import REF, RETRY, IssueTicket, SeatsDesk, TicketsDesk, book
from tests.integration.versioned_order import V1_REF

pytestmark = pytest.mark.integration

E = EventType


async def booking_system(make_system: SystemFactory) -> tuple[System, SeatsDesk, TicketsDesk]:
    """The system with the booking saga and its two desks."""
    system = await make_system(saga_definitions=(V1_REF, REF))
    seats = SeatsDesk(system.settings)
    tickets = TicketsDesk(system.settings)
    for desk in (seats, tickets):
        await system.start_extra(desk)
    return system, seats, tickets


async def events_of(system: System, saga_id: str) -> list[tuple[EventType, str | None]]:
    return [(e.type, e.step) for c in await system.client.history(saga_id) for e in c.events]


async def test_a_step_failing_transiently_five_times_is_retried_until_done_once(
    make_system: SystemFactory,
) -> None:
    """The ticket desk fails five times in a row (its own retries run out, so the
    orchestrator's resends carry on): the saga completes with exactly one ticket, and
    the seat, held before the pivot, is never freed."""
    system, seats, tickets = await booking_system(make_system)
    flaky = Flaky(tickets.issue, failures=5)
    tickets.on_command(IssueTicket, flaky)

    saga_id = await system.client.start(book("b-1"), saga_id=new_saga_id())
    state = await system.settle(saga_id)

    assert state.status is Status.COMPLETED
    assert state.done == ("hold_seat", "issue_ticket")
    assert tickets.issued == 1
    assert flaky.calls[saga_id] > 5
    assert seats.seats[saga_id] == "held"
    kinds = await events_of(system, saga_id)
    assert (E.COMMAND_RESENT, "issue_ticket") in kinds
    assert not any(kind is E.COMPENSATION_STARTED for kind, _ in kinds)


async def test_a_step_failing_past_its_budget_parks_the_saga_until_resumed(
    make_system: SystemFactory,
) -> None:
    """The ticket desk is down: after its budget of sends the saga is parked as
    completing_stuck with the reason, nothing is compensated; once the desk is back an
    operator resumes it and it completes with one ticket."""
    system, seats, tickets = await booking_system(make_system)
    broken = Broken(tickets.issue)
    tickets.on_command(IssueTicket, broken)

    saga_id = await system.client.start(book("b-2"), saga_id=new_saga_id())
    parked = await system.settle(saga_id, timeout=90)

    assert parked.status is Status.COMPLETING_STUCK
    assert parked.step == "issue_ticket"
    assert parked.parked_reason == f"no reply to issue_ticket after {RETRY.max_sends} sends"
    assert parked.deadline is None
    assert seats.seats[saga_id] == "held", "past the pivot nothing is undone"

    broken.fixed = True
    resumed = await system.client.resume(saga_id)
    assert resumed is not None
    state = await system.settle(saga_id)

    assert state.status is Status.COMPLETED
    assert tickets.issued == 1
    kinds = await events_of(system, saga_id)
    assert kinds.count((E.SAGA_PARKED, "issue_ticket")) == 1
    assert (E.SAGA_RESUMED, "issue_ticket") in kinds
