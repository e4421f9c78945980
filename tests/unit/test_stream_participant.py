"""The faststream participant declaration (no I/O): registration, queues, refusals."""

from __future__ import annotations

import json

import pytest
from faststream import FastStream
from faststream.specification import AsyncAPI

from contracts import CancelShipment, ScheduleShipment, ShipmentCancelled, ShipmentFailed
from orchestrator.settings import Settings
from participants.kit.streams import StreamParticipant, StreamService, faststream_app
from participants.shipping.streams import shipping


def test_the_faststream_shipping_declares_both_commands_on_its_queue() -> None:
    """Schedule (refusable) and cancel (not) arrive on ``shipping.commands``."""
    assert set(shipping.commands) == {ScheduleShipment, CancelShipment}
    assert shipping.queues == ("shipping.commands",)
    assert shipping.refusable(ScheduleShipment(order_id="o"))
    assert not shipping.refusable(CancelShipment(order_id="o"))
    assert set(shipping.resources) == {"shipments"}
    refusal = shipping.commands[ScheduleShipment].refusal
    assert refusal is not None
    assert refusal(ScheduleShipment(order_id="o"), "no vans") == ShipmentFailed(
        order_id="o", reason="no vans"
    )


def test_a_second_handler_for_one_command_is_refused_with_its_name() -> None:
    """Two handlers for one contract would make delivery depend on registration order."""
    participant = StreamParticipant(service="shipping")

    @participant.command(CancelShipment)
    async def cancel(command: CancelShipment) -> ShipmentCancelled:
        return ShipmentCancelled(order_id=command.order_id)

    with pytest.raises(ValueError, match="CancelShipment already has a handler"):
        participant.command(CancelShipment)(cancel)


def test_a_command_may_arrive_on_a_queue_of_its_own() -> None:
    """``queue=`` puts a handler on another work queue; queues keep registration order."""
    participant = StreamParticipant(service="shipping")

    async def handle(command: ScheduleShipment) -> None:
        del command

    participant.command(ScheduleShipment, queue="shipping.priority")(handle)
    participant.command(CancelShipment)(handle)
    assert participant.queues == ("shipping.priority", "shipping.commands")


def test_the_handlers_are_faststream_subscribers_of_the_shipping_queue() -> None:
    """faststream's own AsyncAPI of the built broker (no connection) shows the queue and
    the two command models; ``faststream_app`` wraps the same broker."""
    service = StreamService(shipping, Settings(namespace="docs"))
    spec = AsyncAPI(service.broker, schema_version="3.0.0").to_specification()
    doc = json.loads(spec.to_json())
    assert list(doc["channels"]) == ["docs.shipping.commands:shipping"]
    assert {"ScheduleShipment", "CancelShipment"} <= set(doc["components"]["schemas"])
    app = faststream_app(shipping, Settings(namespace="docs"))
    assert isinstance(app, FastStream)
    assert app.broker is not None
