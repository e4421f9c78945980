"""The generated AsyncAPI document (no I/O): a valid AsyncAPI 3.0 document in which
every registered contract, every work queue and every saga step's traffic appears, and
every reference resolves."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from contracts import ReleaseStock, ReserveStock, RestockStock, StockReserved, registered_types
from orchestrator.cli import build_parser
from orchestrator.messaging.asyncapi import deployment_asyncapi, matches
from orchestrator.settings import DEFAULT_PACKS, Settings

with warnings.catch_warnings():  # the validator's own models warn about a field name
    warnings.simplefilter("ignore", UserWarning)
    from asyncapi3.models.asyncapi import AsyncAPI3

SETTINGS = Settings(
    namespace="docs",
    amqp_url="amqp://guest:secret@broker.example:5673/",
    saga_definitions=(*DEFAULT_PACKS, "tests.unit.registration_saga:REGISTRATION"),
)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    """The document of the order pack plus the unit tests' registration saga."""
    return deployment_asyncapi(SETTINGS)


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` in the document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """The object a local ``#/a/b`` reference points at (KeyError if none)."""
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_the_document_is_valid_asyncapi_3(doc: dict[str, Any]) -> None:
    """The pure-python AsyncAPI 3.0 model accepts it, JSON round trip included."""
    assert doc["asyncapi"] == "3.0.0"
    AsyncAPI3.model_validate(json.loads(json.dumps(doc)))


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    """No dangling ``$ref``: channels, messages, schemas."""
    found = list(refs(doc))
    assert len(found) > 100
    for ref in found:
        resolve(doc, ref)


def test_every_registered_contract_is_a_message_with_its_schema(doc: dict[str, Any]) -> None:
    """Each registered type, the registration saga's too, with its payload schema."""
    messages = {m["name"]: m for m in doc["components"]["messages"].values()}
    assert set(registered_types()) <= set(messages)
    assert "registrations.register.v1" in messages
    for type_name, cls in registered_types().items():
        message = messages[type_name]
        assert message["bindings"]["amqp"]["messageType"] == type_name
        schema = resolve(doc, message["payload"]["$ref"])
        assert set(schema["properties"]) == set(cls.model_fields)


def test_every_work_queue_is_a_channel_with_its_retry_tiers_and_dead_letter_queue(
    doc: dict[str, Any],
) -> None:
    """Each queue of the topology, with its bindings and arguments as declared."""
    topology = SETTINGS.topology()
    channels = {c["address"]: c for c in doc["channels"].values()}
    for q in topology.work_queues:
        channel = channels[q.name]
        assert channel["bindings"]["amqp"]["is"] == "queue"
        assert channel["x-dead-letter-queue"] == q.dlq
        assert [t["name"] for t in channel["x-retry-queues"]] == [
            q.retry_queue(i) for i in range(len(q.retry_delays))
        ]
        assert channel["x-arguments"] == topology.work_queue_arguments(q)
        assert channel["x-bindings"] == [
            {"exchange": q.exchange, "routingKey": b} for b in q.bindings
        ]
    assert "docs.registrations.orchestrator" not in channels  # no such queue is invented
    assert channels["docs.orchestrator.registration.starts"]["messages"]


def test_each_step_says_who_sends_and_who_receives(doc: dict[str, Any]) -> None:
    """ReserveStock: the orchestrator sends it for step reserve_stock, inventory's queue
    takes it; StockReserved goes back on the saga's reply queue."""
    messages = doc["components"]["messages"]
    assert {
        "saga": "order_fulfilment",
        "version": 1,
        "step": "reserve_stock",
        "role": "command",
        "sender": "orchestrator",
    } in messages["inventory_reserve_stock_v1"]["x-sagas"]
    assert any(
        u["sender"] == "inventory" and u["role"] == "success"
        for u in messages["inventory_stock_reserved_v1"]["x-sagas"]
    )
    inventory = doc["channels"]["queue_inventory_commands"]["messages"]
    assert {
        ReserveStock.TYPE.replace(".", "_"),
        ReleaseStock.TYPE.replace(".", "_"),
        RestockStock.TYPE.replace(".", "_"),
    } <= set(inventory)
    assert all(name.startswith("inventory_") for name in inventory)
    replies = doc["channels"]["queue_orchestrator_order_fulfilment_replies"]["messages"]
    assert StockReserved.TYPE.replace(".", "_") in replies
    receive = doc["operations"]["inventory_receive_queue_inventory_commands"]
    assert receive["action"] == "receive"
    send = doc["operations"]["orchestrator_send_commands_inventory_reserve_stock"]
    assert send["action"] == "send"
    assert {"name": "saga:order_fulfilment"} in send["tags"]


def test_operations_only_name_messages_of_their_channel(doc: dict[str, Any]) -> None:
    """An operation's messages are references into its own channel."""
    for op in doc["operations"].values():
        channel = op["channel"]["$ref"]
        for message in op["messages"]:
            assert message["$ref"].startswith(channel + "/messages/")


def test_the_server_is_named_without_credentials(doc: dict[str, Any]) -> None:
    """Host and port from AMQP_URL, never the password."""
    assert doc["servers"]["rabbitmq"]["host"] == "broker.example:5673"
    assert "secret" not in json.dumps(doc)


@pytest.mark.parametrize(
    ("binding", "key", "expected"),
    [
        ("inventory.*", "inventory.reserve_stock", True),
        ("inventory.*", "inventory.reserve.stock", False),
        ("*.progressed", "order_fulfilment.progressed", True),
        ("#", "a.b.c", True),
        ("a.#", "a", True),
        ("a.#.c", "a.b.b.c", True),
        ("order_fulfilment", "order_fulfilment", True),
        ("order_fulfilment", "order_return", False),
    ],
)
def test_topic_bindings_match_as_rabbitmq_does(binding: str, key: str, expected: bool) -> None:
    """``*`` one word, ``#`` zero or more."""
    assert matches(binding, key) is expected


def test_saga_asyncapi_is_a_cli_command() -> None:
    """``saga asyncapi --out FILE`` parses."""
    args = build_parser().parse_args(["asyncapi", "--out", "doc.json"])
    assert args.out == "doc.json"
