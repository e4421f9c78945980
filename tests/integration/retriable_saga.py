"""A booking saga with a retriable step, for the tests of forward recovery over the
real broker: hold a seat (compensatable, the pivot), then issue the ticket (retriable:
resent with backoff until it succeeds, never compensated). Both desks are written with
the participant kit and keep their records in memory, keyed by saga id.

``SAGA_DEFINITIONS=...,tests.integration.retriable_saga:BOOKING``
"""

from __future__ import annotations

from contracts import Message, message
from orchestrator.saga.definition import Retry, SagaDefinition, Step
from orchestrator.settings import Settings
from participants.kit import ParticipantService

__all__ = ["BOOKING", "REF", "SeatsDesk", "TicketsDesk", "book"]

REF = "tests.integration.retriable_saga:BOOKING"
TICKET_TIMEOUT = 1.0
RETRY = Retry(max_sends=6, backoff=1.5, max_interval=2.0)


@message("bookings.book_seat.v1")
class BookSeat(Message):
    booking_id: str


@message("cinema.hold_seat.v1")
class HoldSeat(Message):
    booking_id: str


@message("cinema.seat_held.v1")
class SeatHeld(Message):
    booking_id: str


@message("cinema.no_seat.v1")
class NoSeat(Message):
    booking_id: str
    reason: str


@message("cinema.free_seat.v1")
class FreeSeat(Message):
    booking_id: str


@message("cinema.seat_freed.v1")
class SeatFreed(Message):
    booking_id: str


@message("tickets.issue_ticket.v1")
class IssueTicket(Message):
    booking_id: str


@message("tickets.ticket_issued.v1")
class TicketIssued(Message):
    booking_id: str
    ticket_no: str


BOOKING = SagaDefinition(
    name="booking",
    start=BookSeat,
    reference=lambda b: b.booking_id,
    steps=(
        Step(
            name="hold_seat",
            participant="cinema",
            command=lambda b: HoldSeat(booking_id=b.booking_id),
            command_type=HoldSeat,
            success=SeatHeld,
            failure=NoSeat,
            compensate=lambda b: FreeSeat(booking_id=b.booking_id),
            compensation_type=FreeSeat,
            compensated=SeatFreed,
        ),
        Step(
            name="issue_ticket",
            participant="tickets",
            command=lambda b: IssueTicket(booking_id=b.booking_id),
            command_type=IssueTicket,
            success=TicketIssued,
            timeout=TICKET_TIMEOUT,
            retry=RETRY,
        ),
    ),
)


def book(booking_id: str) -> BookSeat:
    """The start command of one booking."""
    return BookSeat(booking_id=booking_id)


class SeatsDesk(ParticipantService):
    """Holds a seat per saga."""

    service = "cinema"

    def __init__(self, settings: Settings, *, instance: str = "") -> None:
        super().__init__(settings, instance=instance)
        self.seats: dict[str, str] = {}

    async def setup(self) -> None:
        """One handler per command."""
        self.on_command(HoldSeat, self.hold)
        self.on_command(FreeSeat, self.free)
        self.consume("cinema.commands", self.handle_command)

    async def hold(self, saga_id: str, cmd: HoldSeat) -> Message:
        self.seats.setdefault(saga_id, "held")
        return SeatHeld(booking_id=cmd.booking_id)

    async def free(self, saga_id: str, cmd: FreeSeat) -> Message:
        self.seats[saga_id] = "freed"
        return SeatFreed(booking_id=cmd.booking_id)


class TicketsDesk(ParticipantService):
    """Issues one ticket per saga, however often the command comes."""

    service = "tickets"

    def __init__(self, settings: Settings, *, instance: str = "") -> None:
        super().__init__(settings, instance=instance)
        self.tickets: dict[str, str] = {}
        self.issued = 0

    async def setup(self) -> None:
        """One handler per command."""
        self.on_command(IssueTicket, self.issue)
        self.consume("tickets.commands", self.handle_command)

    async def issue(self, saga_id: str, cmd: IssueTicket) -> Message:
        if saga_id not in self.tickets:
            self.issued += 1
            self.tickets[saga_id] = f"T-{saga_id[:6]}"
        return TicketIssued(booking_id=cmd.booking_id, ticket_no=self.tickets[saga_id])
