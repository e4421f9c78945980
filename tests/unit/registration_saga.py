"""A small saga of the unit tests' own (not a shipped one): registering for a conference.

Hold a seat, charge the fee, print the badge; each step can be undone. Its contracts are
registered under the ``registrations``, ``seats``, ``billing`` and ``badges`` areas, which
no other saga uses.
"""

from __future__ import annotations

from pydantic import Field

from contracts import Message, message
from orchestrator.saga.definition import SagaDefinition, Step


@message("registrations.register.v1")
class Register(Message):
    """Start: register an attendee."""

    registration_id: str
    attendee: str
    fee_cents: int = Field(ge=0)


@message("seats.hold_seat.v1")
class HoldSeat(Message):
    registration_id: str


@message("seats.seat_held.v1")
class SeatHeld(Message):
    registration_id: str


@message("seats.no_seat_left.v1")
class NoSeatLeft(Message):
    registration_id: str
    reason: str


@message("seats.release_seat.v1")
class ReleaseSeat(Message):
    registration_id: str


@message("seats.seat_released.v1")
class SeatReleased(Message):
    registration_id: str


@message("billing.charge_fee.v1")
class ChargeFee(Message):
    registration_id: str
    fee_cents: int


@message("billing.fee_charged.v1")
class FeeCharged(Message):
    registration_id: str
    fee_cents: int


@message("billing.fee_declined.v1")
class FeeDeclined(Message):
    registration_id: str
    reason: str


@message("billing.refund_fee.v1")
class RefundFee(Message):
    registration_id: str


@message("billing.fee_refunded.v1")
class FeeRefunded(Message):
    registration_id: str


@message("badges.print_badge.v1")
class PrintBadge(Message):
    registration_id: str
    attendee: str


@message("badges.badge_printed.v1")
class BadgePrinted(Message):
    registration_id: str
    badge_number: int


@message("badges.badge_refused.v1")
class BadgeRefused(Message):
    registration_id: str
    reason: str


@message("badges.shred_badge.v1")
class ShredBadge(Message):
    registration_id: str


@message("badges.badge_shredded.v1")
class BadgeShredded(Message):
    registration_id: str


REGISTRATION = SagaDefinition(
    name="registration",
    start=Register,
    reference=lambda r: r.registration_id,
    steps=(
        Step(
            name="hold_seat",
            participant="seats",
            command=lambda r: HoldSeat(registration_id=r.registration_id),
            command_type=HoldSeat,
            success=SeatHeld,
            failure=NoSeatLeft,
            compensate=lambda r: ReleaseSeat(registration_id=r.registration_id),
            compensation_type=ReleaseSeat,
            compensated=SeatReleased,
        ),
        Step(
            name="charge_fee",
            participant="billing",
            command=lambda r: ChargeFee(registration_id=r.registration_id, fee_cents=r.fee_cents),
            command_type=ChargeFee,
            success=FeeCharged,
            failure=FeeDeclined,
            compensate=lambda r: RefundFee(registration_id=r.registration_id),
            compensation_type=RefundFee,
            compensated=FeeRefunded,
        ),
        Step(
            name="print_badge",
            participant="badges",
            command=lambda r: PrintBadge(registration_id=r.registration_id, attendee=r.attendee),
            command_type=PrintBadge,
            success=BadgePrinted,
            failure=BadgeRefused,
            compensate=lambda r: ShredBadge(registration_id=r.registration_id),
            compensation_type=ShredBadge,
            compensated=BadgeShredded,
            timeout=10,
            max_sends=2,
        ),
    ),
)


def register(registration_id: str = "reg-1", **changes: object) -> Register:
    """A start command."""
    fields: dict[str, object] = {
        "registration_id": registration_id,
        "attendee": "Ada Lovelace",
        "fee_cents": 25_000,
    }
    return Register.model_validate({**fields, **changes})


def badge(command: PrintBadge) -> BadgePrinted:
    """The badge printer's reply (its number is not in the command)."""
    return BadgePrinted(registration_id=command.registration_id, badge_number=7)
