"""Message contracts: the registry, the wire codec and what counts as malformed."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

import contracts
from contracts import (
    ContractError,
    MalformedMessage,
    Message,
    OrderLine,
    PaymentDeclined,
    PlaceOrder,
    ReserveStock,
    SagaCompensated,
    StockReservationFailed,
    StockReserved,
    decode,
    encode,
    message,
    registered_types,
    resolve,
)


def _order(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": "order-1",
        "customer_id": "cust-1",
        "lines": [{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-2", "quantity": 1}],
        "amount_cents": 1999,
    }
    body.update(changes)
    return body


def _body(data: object) -> bytes:
    return json.dumps(data).encode()


def _malformed(type_name: str | None, body: bytes) -> MalformedMessage:
    with pytest.raises(MalformedMessage) as caught:
        decode(type_name, body)
    return caught.value


def test_a_valid_order_decodes_with_defaults() -> None:
    order = decode("orders.place_order.v1", _body(_order()))

    assert order == PlaceOrder(
        order_id="order-1",
        customer_id="cust-1",
        lines=(OrderLine(sku="SKU-1", quantity=2), OrderLine(sku="SKU-2", quantity=1)),
        amount_cents=1999,
        currency="EUR",
        ship_to="",
    )


@pytest.mark.parametrize(
    "msg",
    [
        PlaceOrder.model_validate(_order(ship_to="1 Main Street", currency="USD")),
        ReserveStock(order_id="o", lines=(OrderLine(sku="A", quantity=1),)),
        StockReservationFailed(order_id="o", reason="short", sku="A"),
        StockReservationFailed(order_id="o", reason="short"),
        PaymentDeclined(order_id="o", reason="no funds"),
        SagaCompensated(saga_name="s", order_id="o", reason="r", failed_step="x"),
    ],
    ids=lambda m: m.TYPE,
)
def test_encode_then_decode_gives_the_same_message(msg: Message) -> None:
    assert decode(msg.TYPE, encode(msg)) == msg


@pytest.mark.parametrize(
    ("type_name", "body"),
    [
        ("orders.place_order.v1", _order(lines=[{"sku": "SKU-1", "quantity": 0}])),
        ("orders.place_order.v1", _order(lines=[{"sku": "SKU-1", "quantity": -3}])),
        ("orders.place_order.v1", _order(lines=[{"sku": "SKU-1", "quantity": 1_000_001}])),
        (
            "orders.place_order.v1",
            _order(lines=[{"sku": "SKU-1", "quantity": 1}, {"sku": "SKU-1", "quantity": 2}]),
        ),
        (
            "orders.place_order.v1",
            _order(lines=[{"sku": "SKU-1", "quantity": 1}, {"sku": " SKU-1 ", "quantity": 2}]),
        ),
        ("orders.place_order.v1", _order(lines=[])),
        ("orders.place_order.v1", _order(lines=[{"sku": "bad sku!", "quantity": 1}])),
        ("orders.place_order.v1", _order(lines=[{"sku": "SKU-1", "quantity": 1, "x": 1}])),
        ("orders.place_order.v1", _order(coupon="FREE")),
        ("orders.place_order.v1", _order(currency="eur")),
        ("orders.place_order.v1", _order(amount_cents=-1)),
        ("orders.place_order.v1", _order(order_id="")),
        ("orders.place_order.v1", {"order_id": "o"}),
        ("orders.place_order.v1", [1, 2, 3]),
        ("orders.place_order.v1", None),
        ("inventory.stock_reserved.v1", {"order_id": "o", "saga_id": "s"}),
        ("inventory.stock_reservation_failed.v1", {"order_id": "o"}),
        ("payment.payment_authorized.v1", {"order_id": "o"}),
    ],
    ids=[
        "quantity_zero",
        "quantity_negative",
        "quantity_too_large",
        "duplicate_sku",
        "duplicate_sku_after_stripping",
        "no_lines",
        "bad_sku",
        "extra_field_on_line",
        "extra_field",
        "lowercase_currency",
        "negative_amount",
        "empty_order_id",
        "missing_fields",
        "not_an_object",
        "null",
        "extra_field_on_reply",
        "missing_reason",
        "missing_authorization_id",
    ],
)
def test_invalid_bodies_are_schema_violations(type_name: str, body: object) -> None:
    error = _malformed(type_name, _body(body))

    assert error.reason == "schema_violation"
    assert error.detail
    assert str(error).startswith("schema_violation: ")


def test_a_schema_violation_says_where() -> None:
    error = _malformed("orders.place_order.v1", _body(_order(lines=[{"sku": "A", "quantity": 0}])))

    assert "lines.0.quantity" in error.detail


@pytest.mark.parametrize("body", [b"not json", b"{", b"", b"\xff\xfe\xfd", b'{"order_id": '])
def test_bodies_that_are_not_json_are_undecodable(body: bytes) -> None:
    assert _malformed("orders.place_order.v1", body).reason == "undecodable"


@pytest.mark.parametrize(
    "type_name", [None, "", "orders.place_order.v2", "orders.place_order", "nobody.knows.v1"]
)
def test_unknown_types_are_unknown_type(type_name: str | None) -> None:
    assert _malformed(type_name, _body(_order())).reason == "unknown_type"


def test_resolve_finds_the_registered_class() -> None:
    assert resolve("orders.place_order.v1") is PlaceOrder


def test_malformed_message_is_a_contract_error() -> None:
    error = MalformedMessage("too_large", "1 MiB")

    assert isinstance(error, ContractError)
    assert (error.reason, error.detail, str(error)) == ("too_large", "1 MiB", "too_large: 1 MiB")


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (PlaceOrder.model_validate(_order()), "order_id"),
        (OrderLine(sku="A", quantity=1), "quantity"),
        (StockReserved(order_id="o"), "order_id"),
        (SagaCompensated(saga_name="s", reason="r", failed_step="x"), "failed_step"),
    ],
)
def test_models_are_frozen(msg: Message, field: str) -> None:
    with pytest.raises(ValidationError, match="frozen"):
        setattr(msg, field, "changed")


def test_models_strip_surrounding_whitespace() -> None:
    order = PlaceOrder.model_validate(_order(order_id="  order-1 "))

    assert order.order_id == "order-1"


def test_every_registered_type_name_is_versioned_and_matches_its_class() -> None:
    types = registered_types()

    assert types
    for type_name, cls in types.items():
        assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)+\.v[0-9]+", type_name), type_name
        assert type_name == cls.TYPE


def test_every_exported_contract_is_registered() -> None:
    exported = {
        getattr(contracts, name)
        for name in contracts.__all__
        if isinstance(getattr(contracts, name), type)
        and issubclass(getattr(contracts, name), Message)
        and getattr(contracts, name).TYPE
    }

    assert exported == set(registered_types().values())
    assert len(exported) == 22


def test_registered_types_is_a_copy() -> None:
    registered_types().clear()

    assert "orders.place_order.v1" in registered_types()


@pytest.mark.parametrize("type_name", ["orders.place_order", "place_order.v1", "a.b.vx", "a.b.1"])
def test_unversioned_type_names_are_refused(type_name: str) -> None:
    class Probe(Message):
        pass

    with pytest.raises(ValueError, match="must look like"):
        message(type_name)(Probe)
    assert type_name not in registered_types()


def test_a_type_name_cannot_be_registered_twice() -> None:
    class Impostor(Message):
        pass

    with pytest.raises(ValueError, match="registered twice"):
        message("orders.place_order.v1")(Impostor)
    assert resolve("orders.place_order.v1") is PlaceOrder
