"""The commands and replies of the steps after the pivot (issue 16): capture the payment,
ship the stock. Versioned, frozen, no extra fields, integers bounded to int64."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from contracts import (
    CapturePayment,
    MalformedMessage,
    Message,
    OrderLine,
    PaymentCaptured,
    ReleaseStock,
    ShipStock,
    StockShipped,
    decode,
    encode,
)

INT64_MAX = 2**53 - 1  # the contracts bound integers to what every JSON client reads exactly


@pytest.mark.parametrize(
    ("msg", "type_name"),
    [
        (CapturePayment(order_id="o"), "payment.capture_payment.v1"),
        (
            PaymentCaptured(order_id="o", capture_id="cap-1", amount_cents=INT64_MAX),
            "payment.payment_captured.v1",
        ),
        (ShipStock(order_id="o"), "inventory.ship_stock.v1"),
        (StockShipped(order_id="o", units=INT64_MAX), "inventory.stock_shipped.v1"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_each_round_trips_under_its_versioned_name(msg: Message, type_name: str) -> None:
    assert type_name == msg.TYPE
    assert decode(type_name, encode(msg)) == msg


@pytest.mark.parametrize(
    ("type_name", "body"),
    [
        ("payment.payment_captured.v1", {"order_id": "o", "capture_id": "c", "amount_cents": -1}),
        (
            "payment.payment_captured.v1",
            {"order_id": "o", "capture_id": "c", "amount_cents": INT64_MAX + 1},
        ),
        ("inventory.stock_shipped.v1", {"order_id": "o", "units": 10**30}),
        ("inventory.stock_shipped.v1", {"order_id": "o", "units": -1}),
        ("inventory.ship_stock.v1", {"order_id": "o", "lines": []}),
        ("payment.capture_payment.v1", {"order_id": "o", "amount_cents": 1}),
        ("payment.capture_payment.v1", {}),
    ],
    ids=[
        "negative_amount",
        "amount_past_int64",
        "units_past_int64",
        "negative_units",
        "extra_field_on_ship",
        "extra_field_on_capture",
        "missing_order_id",
    ],
)
def test_bad_bodies_are_schema_violations(type_name: str, body: object) -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode(type_name, json.dumps(body).encode())

    assert caught.value.reason == "schema_violation"


def test_they_are_frozen() -> None:
    shipped = StockShipped(order_id="o", units=1)
    with pytest.raises(ValidationError):
        shipped.units = 2  # type: ignore[misc]


def test_release_stock_carries_the_order_lines_and_still_reads_a_body_without_them() -> None:
    """The lines let a release give back what an undecided reservation held; a body from
    an orchestrator that does not send them yet still decodes (no lines: nothing to
    sweep beyond the reservation's own)."""
    lines = (OrderLine(sku="apple", quantity=2),)
    release = ReleaseStock(order_id="o", lines=lines)
    assert decode(release.TYPE, encode(release)) == release
    old = decode(release.TYPE, json.dumps({"order_id": "o"}).encode())
    assert old == ReleaseStock(order_id="o")
    assert old.lines == ()
