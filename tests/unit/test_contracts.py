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
        SagaCompensated(saga_name="s", reference="o", reason="r", failed_step="x"),
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

    # Sagas defined elsewhere (the tests' own) register their contracts in the same
    # registry: compare with the package's.
    shipped = {c for c in registered_types().values() if c.__module__.startswith("contracts.")}
    assert exported == shipped
    assert len(exported) == 43  # 26 of the order saga, 16 of the return saga, the batch


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


LINE = {"sku": "SKU-1", "quantity": 1}


@pytest.mark.parametrize(
    ("type_name", "body"),
    [
        ("orders.place_order.v1", _order(amount_cents=False)),
        ("orders.place_order.v1", _order(amount_cents=True)),
        ("orders.place_order.v1", _order(amount_cents="1999")),
        ("orders.place_order.v1", _order(amount_cents=1999.5)),
        ("orders.place_order.v1", _order(amount_cents=10**30)),
        ("orders.place_order.v1", _order(amount_cents=2**63)),
        ("orders.place_order.v1", _order(amount_cents=2**53)),
        ("orders.place_order.v1", _order(lines=[{"sku": "A", "quantity": "2"}])),
        ("orders.place_order.v1", _order(lines=[{"sku": "A", "quantity": True}])),
        ("orders.place_order.v1", _order(order_id="   ")),
        (
            "orders.place_order.v1",
            _order(lines=[{"sku": f"S{i}", "quantity": 1} for i in range(101)]),
        ),
        ("inventory.reserve_stock.v1", {"order_id": "o", "lines": [LINE, {**LINE, "quantity": 5}]}),
        ("inventory.reserve_stock.v1", {"order_id": "o", "lines": [LINE] * 2}),
        (
            "inventory.reserve_stock.v1",
            {"order_id": "o", "lines": [{"sku": f"S{i}", "quantity": 1} for i in range(101)]},
        ),
        ("inventory.restock_stock.v1", {"sku": "A", "units": True}),
        ("inventory.restocked.v1", {"sku": "A", "units": 10**30, "restock_id": "r"}),
        (
            "payment.authorize_payment.v1",
            {"order_id": "o", "customer_id": "c", "amount_cents": "5"},
        ),
        ("shipping.schedule_shipment.v1", {"order_id": "o", "units": -1}),
        (
            "saga.progressed.v1",
            {"saga_name": "s", "version": "3", "status": "running", "events": []},
        ),
    ],
    ids=[
        "amount_false",
        "amount_true",
        "amount_numeric_string",
        "amount_fraction",
        "amount_beyond_int64",
        "amount_int64_max_plus_one",
        "amount_beyond_json_safe_integers",
        "quantity_numeric_string",
        "quantity_bool",
        "order_id_only_whitespace",
        "order_with_101_lines",
        "reserve_duplicate_sku",
        "reserve_identical_lines",
        "reserve_101_lines",
        "restock_units_bool",
        "restocked_units_beyond_int64",
        "authorize_amount_string",
        "shipment_negative_units",
        "progressed_version_string",
    ],
)
def test_numbers_are_strict_int64_and_lines_are_bounded_and_unique(
    type_name: str, body: object
) -> None:
    """No bool for an int, no numeric string or float for an int, nothing beyond int64
    (MongoDB could not store it); ReserveStock has PlaceOrder's line rules."""
    assert _malformed(type_name, _body(body)).reason == "schema_violation"


def test_int64_bounds_are_inclusive_and_in_the_json_schema() -> None:
    """Up to 2**53 - 1 (what every JSON reader holds exactly); a whole float is whole."""
    order = decode("orders.place_order.v1", _body(_order(amount_cents=2**53 - 1)))
    assert isinstance(order, PlaceOrder)
    assert order.amount_cents == 2**53 - 1
    whole = decode("orders.place_order.v1", _body(_order(amount_cents=1999.0)))
    assert isinstance(whole, PlaceOrder)
    assert (whole.amount_cents, type(whole.amount_cents)) == (1999, int)
    schema = PlaceOrder.model_json_schema()
    assert schema["properties"]["amount_cents"]["maximum"] == 2**53 - 1
    assert schema["properties"]["amount_cents"]["minimum"] == 0
