"""Dead-letter operator tooling on the real broker and store: list, peek, replay, discard,
and the ``saga dlq`` commands run as a separate process against the live system."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aio_pika
import pytest

from contracts import AuthorizePayment, ReserveStock
from orchestrator.ops import (
    DISCARDS,
    EVERYTHING,
    DlqError,
    Selector,
    UnknownQueue,
    discard,
    list_dead_letters,
    peek,
    replay,
    resolve_queue,
)
from orchestrator.saga.state import Status
from orchestrator.settings import Settings
from tests.faults import Broken
from tests.helpers import eventually
from tests.helpers import run_cli as saga
from tests.integration.conftest import System, SystemFactory
from tests.rabbit import depth

pytestmark = pytest.mark.integration

RESERVE_KEY = "inventory.reserve_stock"
NO_LINES = json.dumps({"order_id": "o-1", "lines": []}).encode()


def bad(message_id: str, body: bytes, *, saga_id: str = "saga-x", kind: str = "") -> dict[str, Any]:
    """A message the inventory consumer dead-letters on its first attempt."""
    return {
        "message_id": message_id,
        "body": body,
        "correlation_id": saga_id,
        "type": kind or ReserveStock.TYPE,
    }


async def publish_raw(
    settings: Settings, messages: list[dict[str, Any]], *, exchange: str | None = None
) -> None:
    """Publish with a plain client, confirmed: to the commands exchange with the reserve
    stock routing key, or (``exchange=""``) straight to the queue named by ``key``."""
    topology = settings.topology()
    connection = await aio_pika.connect(
        settings.amqp_url, client_properties={"connection_name": "test.publish-raw"}
    )
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(topology.commands_exchange)
        )
        for spec in messages:
            fields = dict(spec)
            key = fields.pop("key", RESERVE_KEY)
            body = fields.pop("body")
            await target.publish(aio_pika.Message(body, **fields), routing_key=key, mandatory=True)


async def dlq_depth_is(system: System, queue: str, expected: int) -> int:
    """Wait until ``queue`` holds exactly ``expected`` ready messages."""
    return await eventually(
        lambda: depth(system.settings.amqp_url, queue),
        until=lambda n: n == expected,
        what=f"{queue} holding {expected}",
    )


async def test_list_counts_and_peek_shows_headers_and_body_without_removing(
    system: System,
) -> None:
    """Three malformed commands are parked: list counts them against the inventory DLQ
    only; peek shows their headers, decoded bodies and contract problems, honours the
    filters and the limit, and leaves every message in place, in order."""
    topology = system.settings.topology()
    dlq = topology.queue("inventory.commands").dlq
    await publish_raw(
        system.settings,
        [
            bad("m-schema", NO_LINES, saga_id="saga-a"),
            bad("m-text", b"{not json", saga_id="saga-b"),
            bad("m-binary", b"\xff\xfe\x00", saga_id="saga-a", kind="inventory.teleport.v1"),
        ],
    )
    await dlq_depth_is(system, dlq, 3)
    bus = system.client.bus

    counts = {q.name: q.messages for q in await list_dead_letters(bus)}
    assert set(counts) == {q.dlq for q in topology.work_queues}
    assert counts[dlq] == 3
    assert sum(counts.values()) == 3

    letters = await peek(bus, "inventory.commands")
    assert [x.message_id for x in letters] == ["m-schema", "m-text", "m-binary"]
    schema, text, binary = letters
    assert schema.saga_id == "saga-a"
    assert schema.type == ReserveStock.TYPE
    assert schema.reason == "schema_violation"
    assert schema.headers["x-attempt"] == 1
    assert schema.headers["x-error-type"] == "MalformedMessage"
    assert schema.headers["x-original-exchange"] == topology.commands_exchange
    assert schema.headers["x-original-routing-key"] == RESERVE_KEY
    assert schema.headers["x-queue"] == topology.queue("inventory.commands").name
    assert schema.body_format == "json"
    assert schema.body_json == {"order_id": "o-1", "lines": []}
    assert schema.problem is not None
    assert schema.problem.startswith("schema_violation")
    assert (text.body_format, text.body_text, text.reason) == ("text", "{not json", "undecodable")
    assert text.body_note
    assert (binary.body_format, binary.body_text) == ("base64", "//4A")
    assert binary.problem is not None
    assert binary.problem.startswith("unknown_type")

    await dlq_depth_is(system, dlq, 3)
    assert [x.message_id for x in await peek(bus, dlq)] == ["m-schema", "m-text", "m-binary"]
    by_saga = await peek(bus, dlq, selector=Selector(saga_id="saga-a"))
    assert [x.message_id for x in by_saga] == ["m-schema", "m-binary"]
    by_reason = await peek(bus, dlq, selector=Selector(reason="undecodable"))
    assert [x.message_id for x in by_reason] == ["m-text"]
    assert [x.message_id for x in await peek(bus, dlq, limit=2)] == ["m-schema", "m-text"]
    await dlq_depth_is(system, dlq, 3)


async def test_queue_names_resolve_short_or_full_and_unknown_names_list_the_known(
    system: System,
) -> None:
    """``payment.commands``, its full name and its DLQ's name all designate the payment
    DLQ; an unknown name fails with every known DLQ listed; selections are explicit."""
    topology = system.settings.topology()
    payment = topology.queue("payment.commands")
    for name in ("payment.commands", payment.name, payment.dlq, "payment.commands.dlq"):
        assert resolve_queue(topology, name) is payment
    with pytest.raises(UnknownQueue) as caught:
        resolve_queue(topology, "billing.commands")
    assert payment.dlq in str(caught.value)
    assert caught.value.known == [q.dlq for q in topology.work_queues]
    with pytest.raises(DlqError):
        Selector()
    with pytest.raises(DlqError):
        Selector(everything=True, saga_id="s")


async def test_replaying_a_sagas_dead_lettered_command_completes_it(
    make_system: SystemFactory,
) -> None:
    """Payment is broken, so both sagas' AuthorizePayment commands are parked while the
    sagas wait (long deadline, one send). Replayed while still broken, a command gets all
    its attempts again. With payment fixed, a dry run for saga A sends and removes
    nothing; the real replay of saga A's messages alone completes saga A, while saga B
    stays waiting with its command still parked."""
    system = await make_system(retry_delays=(0.1, 0.2), step_timeout=300.0, step_max_sends=1)
    await system.inventory.inventory.set_stock("apple", 5)
    broken = Broken(system.payment.authorize)
    system.payment.on_command(AuthorizePayment, broken)
    dlq = system.settings.topology().queue("payment.commands").dlq
    saga_a = await system.order(("apple", 2))
    saga_b = await system.order(("apple", 1))
    await dlq_depth_is(system, dlq, 2)
    for saga_id in (saga_a, saga_b):
        state = await system.client.state(saga_id)
        assert (state.status, state.step) == (Status.RUNNING, "authorize_payment")
    bus = system.client.bus

    # Replayed while payment is still broken, saga B's command starts again at attempt 1:
    # three more deliveries through the retry tiers, then parked again.
    again = await replay(bus, dlq, selector=Selector(saga_id=saga_b))
    assert again.count("done") == 1
    back = await eventually(
        lambda: peek(bus, dlq, selector=Selector(saga_id=saga_b)),
        until=lambda xs: len(xs) == 1 and xs[0].headers.get("x-replay-count") == 1,
        what="saga B's command parked again after its replay",
    )
    assert back[0].headers["x-attempt"] == 3
    assert broken.calls == 9
    version_a = (await system.client.state(saga_a)).version
    calls = broken.calls
    broken.fixed = True

    dry = await replay(bus, "payment.commands", selector=Selector(saga_id=saga_a), dry_run=True)
    assert [(o.saga_id, o.type, o.status) for o in dry.outcomes] == [
        (saga_a, AuthorizePayment.TYPE, "would")
    ]
    assert dry.outcomes[0].detail == f"-> (default exchange) / {dlq.removesuffix('.dlq')}"
    await dlq_depth_is(system, dlq, 2)
    assert (await system.client.state(saga_a)).version == version_a

    report = await replay(
        bus, "payment.commands", selector=Selector(saga_id=saga_a), rate_per_second=50
    )
    assert report.ok
    assert (report.depth, report.scanned, report.count("done")) == (2, 2, 1)
    state = await system.settle(saga_a, timeout=60.0)
    assert state.status is Status.COMPLETED
    assert broken.calls == calls + 1, "the dry run must not have sent anything"
    remaining = await peek(bus, dlq)
    assert [(x.saga_id, x.reason) for x in remaining] == [(saga_b, "retries_exhausted")]
    state_b = await system.client.state(saga_b)
    assert (state_b.status, state_b.step) == (Status.RUNNING, "authorize_payment")
    await system.invariants({"apple": 5}, [saga_a])


async def test_replayed_message_that_fails_again_comes_back_with_fresh_headers(
    system: System,
) -> None:
    """Replayed undecodable messages go back to the inventory queue, fail at once and are
    parked again: attempt 1, replay count 1, a new failure time after the replay, the
    original routing kept. The rate limit spaces the publishes; others are untouched."""
    topology = system.settings.topology()
    dlq = topology.queue("inventory.commands").dlq
    await publish_raw(
        system.settings,
        [bad(f"m-text-{i}", b"{not json") for i in range(3)] + [bad("m-schema", NO_LINES)],
    )
    await dlq_depth_is(system, dlq, 4)
    bus = system.client.bus
    loop = asyncio.get_running_loop()
    seen: list[tuple[int, int]] = []

    started = loop.time()
    report = await replay(
        bus,
        dlq,
        selector=Selector(reason="undecodable"),
        rate_per_second=10,
        progress=lambda done, total: seen.append((done, total)),
    )
    elapsed = loop.time() - started

    assert report.count("done") == 3
    assert report.ok
    assert elapsed >= 0.2, "three publishes at 10/s take at least 0.2 s"
    assert seen[0] == (0, 4)
    assert seen[-1][0] == 3
    letters = await eventually(
        lambda: peek(bus, dlq),
        until=lambda xs: sum(1 for x in xs if "x-replay-count" in x.headers) == 3,
        what="replayed messages parked again",
    )
    # Sorted: a quorum dead-letter queue puts a message a replay skips back at its tail.
    letters = sorted(letters, key=lambda x: x.message_id or "")
    assert [x.message_id for x in letters] == ["m-schema", "m-text-0", "m-text-1", "m-text-2"]
    assert "x-replay-count" not in letters[0].headers
    for letter in letters[1:]:
        h = letter.headers
        assert h["x-replay-count"] == 1
        assert h["x-attempt"] == 1
        assert h["x-error-reason"] == "undecodable"
        assert h["x-first-failure-at"] >= h["x-replayed-at"]
        assert h["x-original-exchange"] == topology.commands_exchange
        assert h["x-original-routing-key"] == RESERVE_KEY
        assert letter.body == b"{not json"


async def test_replay_not_confirmed_leaves_the_message_and_stops(system: System) -> None:
    """Replayed to an original routing key nobody is bound to, the copy is returned by the
    broker: the dead letter stays with its failure headers, the report says so, and the
    message behind it is not touched."""
    topology = system.settings.topology()
    work = topology.queue("inventory.commands")
    parked = {
        "x-error-reason": "retries_exhausted",
        "x-attempt": 4,
        "x-original-exchange": topology.commands_exchange,
        "x-original-routing-key": "nobody.listens",
    }
    await publish_raw(
        system.settings,
        [
            {"message_id": f"lost-{i}", "body": NO_LINES, "key": work.dlq, "headers": parked}
            for i in range(2)
        ],
        exchange="",
    )
    await dlq_depth_is(system, work.dlq, 2)

    report = await replay(system.client.bus, work.dlq, selector=EVERYTHING, target="original")

    assert not report.ok
    assert [(o.message_id, o.status) for o in report.outcomes] == [("lost-0", "failed")]
    assert "not replayed" in report.outcomes[0].detail
    assert (report.depth, report.scanned) == (2, 1)
    letters = await eventually(
        lambda: peek(system.client.bus, work.dlq), until=lambda xs: len(xs) == 2
    )
    # Sorted: a quorum dead-letter queue puts a message it got back (nack) at its tail.
    assert sorted(x.message_id or "" for x in letters) == ["lost-0", "lost-1"]
    assert all(x.headers["x-error-reason"] == "retries_exhausted" for x in letters)
    assert all("x-replay-count" not in x.headers for x in letters)


async def test_discard_records_each_message_with_the_reason_before_removing_it(
    system: System,
) -> None:
    """Discarding requires a reason; a dry run removes nothing; the real discard removes
    only the selected messages and leaves one record per message in dlq_discards."""
    dlq = system.settings.topology().queue("inventory.commands").dlq
    await publish_raw(
        system.settings,
        [
            bad("d-1", NO_LINES, saga_id="saga-d"),
            bad("d-2", b"{", saga_id="saga-d"),
            bad("keep", NO_LINES, saga_id="saga-k"),
        ],
    )
    await dlq_depth_is(system, dlq, 3)
    bus, db = system.client.bus, system.inventory.db
    selector = Selector(saga_id="saga-d")

    with pytest.raises(DlqError, match="reason"):
        await discard(bus, dlq, selector=selector, reason="  ", database=db)
    dry = await discard(bus, dlq, selector=selector, reason="x", database=db, dry_run=True)
    assert [o.status for o in dry.outcomes] == ["would", "would"]
    await dlq_depth_is(system, dlq, 3)
    assert await db[DISCARDS].count_documents({}) == 0

    report = await discard(
        bus,
        dlq,
        selector=selector,
        reason="test data from a broken client",
        database=db,
        actor="ops",
    )

    assert report.ok
    assert [(o.message_id, o.status) for o in report.outcomes] == [("d-1", "done"), ("d-2", "done")]
    await dlq_depth_is(system, dlq, 1)
    assert [x.message_id for x in await peek(bus, dlq)] == ["keep"]
    records = {r["message_id"]: r async for r in db[DISCARDS].find({})}
    assert set(records) == {"d-1", "d-2"}
    first = records["d-1"]
    assert first["reason"] == "test data from a broken client"
    assert first["actor"] == "ops"
    assert first["saga_id"] == "saga-d"
    assert first["type"] == ReserveStock.TYPE
    assert first["queue"] == dlq
    assert first["error_reason"] == "schema_violation"
    assert first["headers"]["x-error-reason"] == "schema_violation"
    assert first["body"] == NO_LINES
    assert first["discarded_at"] is not None
    assert records["d-2"]["body_text"] == "{"


async def test_cli_lists_shows_replays_and_discards_dead_letters(system: System) -> None:
    """``saga dlq`` against the live system: list counts, show prints headers and an
    indented JSON body, unknown queues and missing selections are refused, a dry run
    removes nothing, discard needs and stores a reason, replay sends messages back."""
    s = system.settings
    dlq = s.topology().queue("inventory.commands").dlq
    await publish_raw(
        s,
        [bad(f"c-{i}", NO_LINES, saga_id="saga-c") for i in range(2)] + [bad("c-text", b"{")],
    )
    await dlq_depth_is(system, dlq, 3)

    code, out, _ = await saga(s, "dlq", "list")
    assert code == 0
    assert re.search(rf"^{re.escape(dlq)}\s+3\s", out, re.MULTILINE), out
    assert re.search(r"^total\s+3$", out, re.MULTILINE), out

    code, out, _ = await saga(s, "dlq", "show", "inventory.commands", "--saga-id", "saga-c")
    assert code == 0
    assert f"{dlq}: 3 messages; showing 2 (saga id saga-c)" in out
    assert out.count("message c-") == 2
    assert "reason     schema_violation" in out
    assert 'x-error-reason: "schema_violation"' in out
    assert '      "order_id": "o-1",' in out
    assert "INVALID: schema_violation" in out

    code, _, err = await saga(s, "dlq", "show", "billing.commands")
    assert code == 2
    assert "no dead-letter queue 'billing.commands'" in err
    assert dlq in err

    code, _, err = await saga(s, "dlq", "replay", "inventory.commands")
    assert code == 2
    assert "--all" in err
    code, _, err = await saga(s, "dlq", "replay", "inventory.commands", "--message-id", "nope")
    assert code == 1
    assert "no message" in err

    code, out, _ = await saga(s, "dlq", "replay", dlq, "--saga-id", "saga-c", "--dry-run")
    assert code == 0
    assert f"dry run: would replay 2 of 3 messages in {dlq}" in out
    assert len(re.findall(r"^  would replay +c-\d  ", out, re.MULTILINE)) == 2, out
    await dlq_depth_is(system, dlq, 3)

    args = ["dlq", "discard", "inventory.commands", "--error-reason", "undecodable"]
    code, _, err = await saga(s, *args, "--reason", " ")
    assert code == 2
    code, out, _ = await saga(s, *args, "--reason", "junk from a load test")
    assert code == 0, out
    assert f"discarded 1 of 3 messages in {dlq}" in out
    await dlq_depth_is(system, dlq, 2)
    record = await system.inventory.db[DISCARDS].find_one({"message_id": "c-text"})
    assert record is not None
    assert record["reason"] == "junk from a load test"

    code, out, _ = await saga(s, "dlq", "replay", "inventory.commands", "--all", "--rate", "100")
    assert code == 0, out
    assert f"replayed 2 of 2 messages in {dlq}" in out
    await eventually(
        lambda: peek(system.client.bus, dlq),
        until=lambda xs: len(xs) == 2 and all(x.headers.get("x-replay-count") == 1 for x in xs),
        what="replayed messages parked again",
    )
