"""The shipping service again, written with faststream.

Run it with ``python -m participants.shipping.streams``.

Same queue, same store (``MongoShipments``: one document per saga is the effect and its
idempotency record), same replies as ``participants.shipping.service``; only the shell
differs. The aio-pika service stays the default entry point (``saga-shipping``).
"""

from __future__ import annotations

from typing import Annotated

from contracts import (
    CancelShipment,
    ScheduleShipment,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
)
from orchestrator.settings import env_list
from participants.kit.retention import record_retention
from participants.kit.streams import (
    SagaId,
    StreamParticipant,
    StreamService,
    run_participant,
    uses,
)
from participants.kit.writes import write_window
from participants.shipping.service import UNDELIVERABLE, MongoShipments

__all__ = ["Shipments", "main", "shipping"]

shipping = StreamParticipant(service="shipping")
Shipments = Annotated[MongoShipments, uses("shipments")]


@shipping.resource("shipments")
async def open_shipments(service: StreamService) -> MongoShipments:
    """The shipment store on the service's database, with its retention index."""
    env = service.settings.env()
    shipments = MongoShipments(
        database=service.db,
        undeliverable=env_list(env, "SHIPPING_UNDELIVERABLE", UNDELIVERABLE),
        retention_seconds=record_retention(env),
        write_window=write_window(env),
    )
    await shipments.ensure_indexes()
    return shipments


@shipping.command(
    ScheduleShipment,
    refusal=lambda c, reason: ShipmentFailed(order_id=c.order_id, reason=reason),
)
async def schedule(
    command: ScheduleShipment, saga_id: SagaId, shipments: Shipments
) -> ShipmentScheduled | ShipmentFailed:
    """Book unless the destination is undeliverable (booked once per saga)."""
    doc = await shipments.schedule(saga_id, command)
    if doc.get("shipment_id"):
        return ShipmentScheduled(order_id=command.order_id, shipment_id=doc["shipment_id"])
    return ShipmentFailed(order_id=command.order_id, reason=doc.get("reason") or "refused")


@shipping.command(CancelShipment)
async def cancel(
    command: CancelShipment, saga_id: SagaId, shipments: Shipments
) -> ShipmentCancelled:
    """Compensation: cancel the booking (or leave a marker that refuses a late one)."""
    await shipments.cancel(saga_id)
    return ShipmentCancelled(order_id=command.order_id)


def main() -> None:
    """Entry point ``python -m participants.shipping.streams``."""
    run_participant(shipping)


if __name__ == "__main__":
    main()
