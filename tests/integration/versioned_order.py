"""A version 2 of the order saga, for the tests of changing a saga while sagas run: it
adds a step, awarding loyalty points, done by a loyalty desk written with the
participant kit (points kept in memory, keyed by saga id).

The shipped pack registers its own v2 (the retriable tail) beside v1; these tests stand
in for it with their own, so :data:`V1_REF` is the shipped pack with v1 only (what the
release before the tail registered).
``SAGA_DEFINITIONS=tests.integration.versioned_order:V1_PACK,tests.integration.versioned_order:V2_PACK``
(:data:`BOTH`) registers v1 and this v2; :data:`V2_REF` alone registers v2 only (a
configuration that drops v1).
"""

from __future__ import annotations

from dataclasses import replace

from contracts import Message, PlaceOrder, message
from orchestrator.packs import SagaPack
from orchestrator.packs.order_fulfilment import ORDER_FULFILMENT, ORDER_FULFILMENT_PARALLEL, PACK
from orchestrator.packs.order_fulfilment.definition import order_steps
from orchestrator.saga.definition import SagaDefinition, Step
from orchestrator.settings import Settings
from participants.kit import ParticipantService

__all__ = [
    "BOTH",
    "ORDER_V2",
    "V1_PACK",
    "V1_REF",
    "V1_STEPS",
    "V2_PACK",
    "V2_REF",
    "V2_STEPS",
    "LoyaltyDesk",
]

V1_PACK = replace(PACK, definitions=(ORDER_FULFILMENT, ORDER_FULFILMENT_PARALLEL))
"""The shipped pack as the release before the retriable tail registered it: v1 only."""
V1_REF = "tests.integration.versioned_order:V1_PACK"
V2_REF = "tests.integration.versioned_order:V2_PACK"
BOTH = (V1_REF, V2_REF)
V1_STEPS = ("reserve_stock", "authorize_payment", "schedule_shipment")
V2_STEPS = (*V1_STEPS, "award_points")


@message("loyalty.award_points.v1")
class AwardPoints(Message):
    order_id: str
    points: int


@message("loyalty.points_awarded.v1")
class PointsAwarded(Message):
    order_id: str


@message("loyalty.points_refused.v1")
class PointsRefused(Message):
    order_id: str
    reason: str


@message("loyalty.revoke_points.v1")
class RevokePoints(Message):
    order_id: str


@message("loyalty.points_revoked.v1")
class PointsRevoked(Message):
    order_id: str


AWARD = Step(
    name="award_points",
    participant="loyalty",
    command=lambda o: AwardPoints(order_id=o.order_id, points=o.amount_cents // 100),
    command_type=AwardPoints,
    success=PointsAwarded,
    failure=PointsRefused,
    compensate=lambda o: RevokePoints(order_id=o.order_id),
    compensation_type=RevokePoints,
    compensated=PointsRevoked,
)

ORDER_V2 = SagaDefinition(
    name="order_fulfilment",
    version=2,
    start=PlaceOrder,
    steps=(*order_steps(), AWARD),
    reference=lambda o: o.order_id,
    description="v1, then award loyalty points",
)

V2_PACK = SagaPack(name="order_fulfilment", definitions=(ORDER_V2,))


class LoyaltyDesk(ParticipantService):
    """Awards points once per saga; revoking them is recorded too."""

    service = "loyalty"

    def __init__(self, settings: Settings, *, instance: str = "") -> None:
        super().__init__(settings, instance=instance)
        self.points: dict[str, str] = {}

    async def setup(self) -> None:
        """One handler per command."""
        self.on_command(
            AwardPoints,
            self.award,
            refusal=lambda c, r: PointsRefused(order_id=c.order_id, reason=r),
        )
        self.on_command(RevokePoints, self.revoke)
        self.consume("loyalty.commands", self.handle_command)

    async def award(self, saga_id: str, cmd: AwardPoints) -> Message:
        self.points.setdefault(saga_id, "awarded")
        return PointsAwarded(order_id=cmd.order_id)

    async def revoke(self, saga_id: str, cmd: RevokePoints) -> Message:
        self.points[saga_id] = "revoked"
        return PointsRevoked(order_id=cmd.order_id)
