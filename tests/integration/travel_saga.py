"""A saga defined by a "team" outside the package: booking a trip in four steps.

Nothing here is shipped, and nothing in the engine knows it: a live orchestrator loads
it through ``SAGA_DEFINITIONS=tests.integration.travel_saga:TRAVEL``, and its four
participants are written with the participant kit alone. Each participant keeps its
bookings in memory, keyed by saga id (its effect happens once per saga, however often a
command is delivered), which is enough for the tests that start them.
"""

from __future__ import annotations

from pydantic import Field

from contracts import Message, message
from orchestrator.saga.definition import SagaDefinition, Step
from orchestrator.settings import Settings
from participants.kit import ParticipantService

__all__ = ["REF", "TRAVEL", "CarsDesk", "FlightsDesk", "HotelsDesk", "PaymentsDesk"]

REF = "tests.integration.travel_saga:TRAVEL"
"""The ``SAGA_DEFINITIONS`` entry of this saga."""


@message("trips.book_trip.v1")
class BookTrip(Message):
    """Start: book flight, hotel and car, then charge the card."""

    trip_id: str
    traveller: str
    destination: str
    nights: int = Field(gt=0)
    car_class: str = "compact"
    amount_cents: int = Field(ge=0)


@message("flights.book_flight.v1")
class BookFlight(Message):
    trip_id: str
    traveller: str
    destination: str


@message("flights.flight_booked.v1")
class FlightBooked(Message):
    trip_id: str
    flight_no: str


@message("flights.no_flight.v1")
class NoFlight(Message):
    trip_id: str
    reason: str


@message("flights.cancel_flight.v1")
class CancelFlight(Message):
    trip_id: str


@message("flights.flight_cancelled.v1")
class FlightCancelled(Message):
    trip_id: str


@message("hotels.book_room.v1")
class BookRoom(Message):
    trip_id: str
    destination: str
    nights: int


@message("hotels.room_booked.v1")
class RoomBooked(Message):
    trip_id: str


@message("hotels.no_room.v1")
class NoRoom(Message):
    trip_id: str
    reason: str


@message("hotels.cancel_room.v1")
class CancelRoom(Message):
    trip_id: str


@message("hotels.room_cancelled.v1")
class RoomCancelled(Message):
    trip_id: str


@message("cars.rent_car.v1")
class RentCar(Message):
    trip_id: str
    destination: str
    car_class: str


@message("cars.car_rented.v1")
class CarRented(Message):
    trip_id: str


@message("cars.no_car.v1")
class NoCar(Message):
    trip_id: str
    reason: str


@message("cars.return_car.v1")
class ReturnCar(Message):
    trip_id: str


@message("cars.car_returned.v1")
class CarReturned(Message):
    trip_id: str


@message("payments.charge_card.v1")
class ChargeCard(Message):
    trip_id: str
    amount_cents: int


@message("payments.card_charged.v1")
class CardCharged(Message):
    trip_id: str


@message("payments.card_declined.v1")
class CardDeclined(Message):
    trip_id: str
    reason: str


@message("payments.refund_card.v1")
class RefundCard(Message):
    trip_id: str


@message("payments.card_refunded.v1")
class CardRefunded(Message):
    trip_id: str


TRAVEL = SagaDefinition(
    name="travel",
    start=BookTrip,
    reference=lambda t: t.trip_id,
    description="book a flight, a room and a car, then charge the card",
    steps=(
        Step(
            name="book_flight",
            participant="flights",
            command=lambda t: BookFlight(
                trip_id=t.trip_id, traveller=t.traveller, destination=t.destination
            ),
            command_type=BookFlight,
            success=FlightBooked,
            failure=NoFlight,
            compensate=lambda t: CancelFlight(trip_id=t.trip_id),
            compensation_type=CancelFlight,
            compensated=FlightCancelled,
        ),
        Step(
            name="book_room",
            participant="hotels",
            command=lambda t: BookRoom(
                trip_id=t.trip_id, destination=t.destination, nights=t.nights
            ),
            command_type=BookRoom,
            success=RoomBooked,
            failure=NoRoom,
            compensate=lambda t: CancelRoom(trip_id=t.trip_id),
            compensation_type=CancelRoom,
            compensated=RoomCancelled,
        ),
        Step(
            name="rent_car",
            participant="cars",
            command=lambda t: RentCar(
                trip_id=t.trip_id, destination=t.destination, car_class=t.car_class
            ),
            command_type=RentCar,
            success=CarRented,
            failure=NoCar,
            compensate=lambda t: ReturnCar(trip_id=t.trip_id),
            compensation_type=ReturnCar,
            compensated=CarReturned,
        ),
        Step(
            name="charge_card",
            participant="payments",
            command=lambda t: ChargeCard(trip_id=t.trip_id, amount_cents=t.amount_cents),
            command_type=ChargeCard,
            success=CardCharged,
            failure=CardDeclined,
            compensate=lambda t: RefundCard(trip_id=t.trip_id),
            compensation_type=RefundCard,
            compensated=CardRefunded,
        ),
    ),
)


class Desk(ParticipantService):
    """What the four desks share: ``records`` holds each saga's booking, by saga id."""

    def __init__(self, settings: Settings, *, instance: str = "") -> None:
        super().__init__(settings, instance=instance)
        self.records: dict[str, str] = {}

    def undo(self, saga_id: str) -> None:
        """Cancel what was booked; a booking that comes after its cancellation is refused."""
        self.records[saga_id] = "cancelled"


class FlightsDesk(Desk):
    """Books a seat on a flight; there are no flights to the Moon."""

    service = "flights"

    async def setup(self) -> None:
        """One handler per command."""
        self.on_command(
            BookFlight, self.book, refusal=lambda c, r: NoFlight(trip_id=c.trip_id, reason=r)
        )
        self.on_command(CancelFlight, self.cancel)
        self.consume("flights.commands", self.handle_command)

    async def book(self, saga_id: str, cmd: BookFlight) -> Message:
        status = self.records.setdefault(
            saga_id, "refused" if cmd.destination == "Moon" else "booked"
        )
        if status != "booked":
            return NoFlight(trip_id=cmd.trip_id, reason=f"no flight to {cmd.destination}")
        return FlightBooked(trip_id=cmd.trip_id, flight_no=f"FL-{saga_id[:6]}")

    async def cancel(self, saga_id: str, cmd: CancelFlight) -> Message:
        self.undo(saga_id)
        return FlightCancelled(trip_id=cmd.trip_id)


class HotelsDesk(Desk):
    """Books a room for the nights asked."""

    service = "hotels"

    async def setup(self) -> None:
        """One handler per command."""
        self.on_command(
            BookRoom, self.book, refusal=lambda c, r: NoRoom(trip_id=c.trip_id, reason=r)
        )
        self.on_command(CancelRoom, self.cancel)
        self.consume("hotels.commands", self.handle_command)

    async def book(self, saga_id: str, cmd: BookRoom) -> Message:
        if self.records.setdefault(saga_id, "booked") != "booked":
            return NoRoom(trip_id=cmd.trip_id, reason="cancelled before it was booked")
        return RoomBooked(trip_id=cmd.trip_id)

    async def cancel(self, saga_id: str, cmd: CancelRoom) -> Message:
        self.undo(saga_id)
        return RoomCancelled(trip_id=cmd.trip_id)


class CarsDesk(Desk):
    """Rents a car; nobody rents out tanks."""

    service = "cars"

    async def setup(self) -> None:
        """One handler per command."""
        self.on_command(RentCar, self.rent, refusal=lambda c, r: NoCar(trip_id=c.trip_id, reason=r))
        self.on_command(ReturnCar, self.give_back)
        self.consume("cars.commands", self.handle_command)

    async def rent(self, saga_id: str, cmd: RentCar) -> Message:
        status = self.records.setdefault(
            saga_id, "refused" if cmd.car_class == "tank" else "booked"
        )
        if status != "booked":
            return NoCar(trip_id=cmd.trip_id, reason=f"no {cmd.car_class} to rent")
        return CarRented(trip_id=cmd.trip_id)

    async def give_back(self, saga_id: str, cmd: ReturnCar) -> Message:
        self.undo(saga_id)
        return CarReturned(trip_id=cmd.trip_id)


class PaymentsDesk(Desk):
    """Charges the card; amounts above 10,000.00 are declined."""

    service = "payments"

    async def setup(self) -> None:
        """One handler per command."""
        self.on_command(
            ChargeCard, self.charge, refusal=lambda c, r: CardDeclined(trip_id=c.trip_id, reason=r)
        )
        self.on_command(RefundCard, self.refund)
        self.consume("payments.commands", self.handle_command)

    async def charge(self, saga_id: str, cmd: ChargeCard) -> Message:
        status = self.records.setdefault(
            saga_id, "refused" if cmd.amount_cents > 1_000_000 else "booked"
        )
        if status != "booked":
            return CardDeclined(trip_id=cmd.trip_id, reason="amount too high")
        return CardCharged(trip_id=cmd.trip_id)

    async def refund(self, saga_id: str, cmd: RefundCard) -> Message:
        self.undo(saga_id)
        return CardRefunded(trip_id=cmd.trip_id)
