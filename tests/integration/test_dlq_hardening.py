"""Dead-letter tools on what the consumer and the broker really park: unreadable bodies,
messages the broker dead-lettered itself (``x-death``), and operations running at once."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from contracts import ReserveStock
from orchestrator.ops import DISCARDS, EVERYTHING, DlqBusy, Selector, peek, replay
from orchestrator.ops.exclusive import exclusive
from tests.helpers import eventually
from tests.helpers import run_cli as saga
from tests.integration.apiserver import serve_api
from tests.integration.conftest import SystemFactory
from tests.integration.test_dlq_ops import NO_LINES, bad, dlq_depth_is, publish_raw
from tests.integration.test_retries_and_dead_letters import MALFORMED, NASTY
from tests.rabbit import take_all

pytestmark = pytest.mark.integration

TOKEN = "dlq-operator-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Parsed by json.loads, but too deep to show as JSON safely.
DEEP = b"[" * 900 + b"]" * 900


def parked_bodies() -> list[dict[str, object]]:
    """Every kind of body the inventory consumer dead-letters on its first attempt."""
    messages = [{"message_id": f"m-{reason}", **fields} for reason, fields in MALFORMED.items()]
    messages += [bad(f"m-{name}", body) for name, body in NASTY.items()]
    messages.append(bad("m-deep", DEEP))
    return messages


async def test_every_parked_body_can_be_listed_inspected_replayed_and_discarded(
    make_system: SystemFactory,
) -> None:
    """Too deep for the JSON reader (RecursionError), a 5,000-digit number (ValueError),
    deep but readable, too large, not JSON, schema violations: the API lists them (200),
    ``saga dlq show`` prints them, a replay sends the worst one back (and it is parked
    again), and a discard removes them all, each recorded with its raw body."""
    system = await make_system(max_body_bytes=16_384, operator_token=TOKEN)
    dlq = system.settings.topology().queue("inventory.commands").dlq
    messages = parked_bodies()
    await publish_raw(system.settings, messages)
    await dlq_depth_is(system, dlq, len(messages))
    ids = {str(m["message_id"]) for m in messages}
    bus = system.client.bus

    letters = {x.message_id: x for x in await peek(bus, dlq, limit=50)}
    assert set(letters) == ids
    for name in (*NASTY, "deep"):
        letter = letters[f"m-{name}"]
        assert letter.body_format == "text", name
        assert letter.body_json is None
        assert letter.problem is not None
        assert letter.problem.startswith(("undecodable", "schema_violation")), letter.problem
    assert letters["m-huge-number"].reason == "undecodable"

    async with serve_api(system.settings, headers=AUTH) as http:
        listed = await http.get("/dead-letters/inventory.commands", params={"limit": 50})
        assert listed.status_code == 200, listed.text
        assert {x["message_id"] for x in listed.json()} == ids

        code, out, err = await saga(system.settings, "dlq", "show", "inventory.commands")
        assert code == 0, err
        assert "Traceback" not in err
        assert "message m-nested" in out
        assert "message m-huge-number" in out

        again = await replay(bus, dlq, selector=Selector(message_id="m-nested"))
        assert [o.status for o in again.outcomes] == ["done"]
        back = await eventually(
            lambda: peek(bus, dlq, selector=Selector(message_id="m-nested")),
            until=lambda xs: len(xs) == 1 and xs[0].headers.get("x-replay-count") == 1,
            what="the nested body parked again after its replay",
        )
        assert back[0].body == NASTY["nested"]

        dropped = await http.post(
            "/dead-letters/inventory.commands/discard",
            json={"all": True, "reason": "poison from a fuzzing client"},
        )
        assert dropped.status_code == 200, dropped.text
        assert dropped.json()["ok"]
        assert len(dropped.json()["outcomes"]) == len(messages)
    await dlq_depth_is(system, dlq, 0)
    records = {r["message_id"]: r async for r in system.inventory.db[DISCARDS].find({})}
    assert set(records) == ids
    assert records["m-huge-number"]["body"] == NASTY["huge-number"]
    assert records["m-nested"]["body_format"] == "text"


async def test_a_listing_never_takes_messages_from_a_running_replay(
    make_system: SystemFactory,
) -> None:
    """While a paced replay runs, listings of the same queue (in this process, and from
    another process: the API, the CLI) are refused as busy instead of holding messages:
    the replay gets every message it was asked for."""
    system = await make_system(operator_token=TOKEN)
    dlq = system.settings.topology().queue("inventory.commands").dlq
    await publish_raw(system.settings, [bad(f"r-{i}", NO_LINES) for i in range(12)])
    await dlq_depth_is(system, dlq, 12)
    bus = system.client.bus
    started = asyncio.Event()

    async with serve_api(system.settings, headers=AUTH) as http:
        running = asyncio.create_task(
            replay(
                bus,
                dlq,
                selector=EVERYTHING,
                rate_per_second=2,
                progress=lambda done, _total: started.set() if done else None,
            )
        )
        await asyncio.wait_for(started.wait(), timeout=30)
        with pytest.raises(DlqBusy, match="running"):
            await peek(bus, dlq, wait=0.2)
        busy = await http.get("/dead-letters/inventory.commands")
        assert busy.status_code == 409, busy.text
        assert busy.headers["Retry-After"]
        assert not running.done(), "the checks must run while the replay does"
        report = await running
    async with exclusive(bus, dlq, wait=5):  # held as a replay in this process holds it
        code, _, err = await saga(system.settings, "dlq", "show", "inventory.commands")
    assert code == 1
    assert "running" in err

    assert report.ok
    assert (report.depth, report.scanned, report.count("done")) == (12, 12, 12)
    # Replayed bodies fail again at once and come back; the lock is free again.
    back = await eventually(
        lambda: peek(bus, dlq, limit=50),
        until=lambda xs: len(xs) == 12,
        what="replayed messages parked again",
    )
    assert all(x.headers.get("x-replay-count") == 1 for x in back)


async def test_messages_the_broker_dead_lettered_show_a_readable_reason(
    make_system: SystemFactory,
) -> None:
    """A command redelivered past the quorum delivery limit (its consumer kept dying with
    it) is dead-lettered by the broker: no ``x-error-*`` headers, only ``x-death``. The
    tools say so in words, select it by ``broker:delivery_limit``, and replay it to its
    original routing without the broker's headers."""
    system = await make_system(delivery_limit=1, operator_token=TOKEN)
    topology = system.settings.topology()
    work = topology.queue("inventory.commands")
    await system.inventory.stop()
    await publish_raw(system.settings, [bad("crash-loop", NO_LINES, saga_id="saga-l")])
    connection = await aio_pika.connect(system.settings.amqp_url)
    async with connection:  # a consumer that dies with the message, again and again
        channel = await connection.channel()
        queue = await channel.get_queue(work.name, ensure=True)
        for _ in range(50):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            await message.nack(requeue=True)
    await dlq_depth_is(system, work.dlq, 1)
    bus = system.client.bus

    [letter] = await peek(bus, work.dlq, selector=Selector(reason="broker:delivery_limit"))
    assert "x-error-reason" not in letter.headers
    assert letter.reason == "broker:delivery_limit"
    assert f"dead-lettered it from {work.name}" in letter.reason_text
    assert "delivery limit" in letter.reason_text
    async with serve_api(system.settings, headers=AUTH) as http:
        [shown] = (await http.get("/dead-letters/inventory.commands")).json()
        assert shown["reason"] == "broker:delivery_limit"
        assert shown["reason_text"] == letter.reason_text
    code, out, err = await saga(system.settings, "dlq", "show", "inventory.commands")
    assert code == 0, err
    assert "reason     broker:delivery_limit: the broker dead-lettered it" in out
    assert f"from       {topology.commands_exchange} / inventory.reserve_stock" in out

    report = await replay(bus, work.dlq, selector=EVERYTHING, target="original")
    assert [o.status for o in report.outcomes] == ["done"]
    assert report.outcomes[0].detail.endswith("inventory.reserve_stock")
    [copy] = await eventually(
        lambda: take_all(system.settings.amqp_url, work.name), what="the replayed copy"
    )
    assert copy.message_id == "crash-loop"
    assert copy.type == ReserveStock.TYPE
    assert "x-death" not in (copy.headers or {})
    assert copy.headers["x-replay-count"] == 1
