"""The operator UI in a real headless Chromium, against a running system: the pages show
its sagas, a dead-lettered command is replayed from the page (dry run first) and its saga
finishes, a parked saga is resumed from the page.

``SAGA_UI_SCREENSHOTS=docs/ui uv run pytest tests/integration/test_ui_browser.py``
refreshes the screenshots of the README.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aio_pika
import pytest

from contracts import AuthorizePayment, ScheduleShipment, VoidPayment
from orchestrator.ops import peek, resolve_queue
from orchestrator.readside import ReadSideService
from orchestrator.saga.state import Status
from tests.browser import Browser, chromium, find_chromium, serve
from tests.faults import Broken, HeldUntil
from tests.helpers import eventually

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

    from tests.integration.conftest import System, SystemFactory

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        find_chromium() is None,
        reason="no browser: install Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver; .ci/run does)",
    ),
]

TOKEN = "ui-operator-token"


@pytest.fixture(scope="module")
async def driver() -> AsyncIterator[WebDriver]:
    """One Chromium for the module (each test opens its own pages)."""
    async with chromium() as found:
        yield found


async def with_readside(make_system: SystemFactory, **changes: object) -> System:
    system = await make_system(operator_token=TOKEN, **changes)
    # Reads are open (SAGA_READS_OPEN): these pages are looked at before any login, and
    # changes still need the operator token. tests/integration/test_ui.py checks the read rule.
    system.settings = system.settings.with_(
        extra={**system.settings.extra, "SAGA_READS_OPEN": "true"}
    )
    await system.start_extra(ReadSideService(system.settings))
    await system.inventory.inventory.set_stock("apple", 10)
    return system


async def test_list_saga_and_stuck_pages_show_a_running_systems_sagas(
    make_system: SystemFactory, driver: WebDriver, tmp_path: Path
) -> None:
    """Completed, failed, compensated and a saga whose shipment hangs: the list shows
    them all (and filters), the compensated one has its timeline chart with the refusal
    and both compensations, and the hanging one is on the stuck page with the reason."""
    system = await with_readside(make_system)
    release = asyncio.Event()

    async def hold(_saga_id: str) -> None:
        await release.wait()

    held = HeldUntil(system.shipping.schedule, hold)
    try:
        async with serve(system.settings) as (url, _app):
            ui = Browser(driver, url)
            await ui.forget()
            done = [
                await system.order(("apple", 1)),
                await system.order(("apple", 1), ship_to="Atlantis"),
                await system.order(("gpu", 1)),
            ]
            outcomes = [(await system.settle(s)).status for s in done]
            assert outcomes == [Status.COMPLETED, Status.COMPENSATED, Status.FAILED]
            system.shipping.on_command(ScheduleShipment, held)
            hanging = await system.order(("apple", 2))
            await eventually(lambda: asyncio.sleep(0, held.held), what="shipment held")

            await eventually(
                lambda: _listed(ui, "/ui/sagas"),
                until=lambda ids: set(ids) == {*done, hanging},
                what="the four sagas listed",
            )
            await ui.screenshot("sagas.png", tmp_path)

            await ui.select("#f-status", "compensated")  # htmx swaps the results in
            await eventually(
                lambda: ui.attributes("#sagas tbody tr", "data-saga-id"),
                until=lambda ids: ids == [done[1]],
                what="only the compensated saga listed",
            )
            assert "status=compensated" in await ui.url(), "the filter is in the address"

            await ui.click(f"#sagas a[href$='{done[1]}']")
            await ui.wait_for("#status", "compensated")
            assert "Atlantis" in await ui.text("#events")
            assert len(await ui.texts("svg.timeline rect.span.forward")) == 3
            assert len(await ui.texts("svg.timeline rect.span.compensation")) == 2
            assert len(await ui.texts("svg.timeline .mark.error")) == 1
            assert '"ship_to": "Atlantis"' in await ui.text("#data")
            await ui.screenshot("saga.png", tmp_path)

            await eventually(
                lambda: _listed(ui, "/ui/stuck?idle=1s", "#stuck"),
                until=lambda ids: ids == [hanging],
                what="the hanging saga on the stuck page",
            )
            reason = await ui.text(f"#stuck tr[data-saga-id='{hanging}'] .reason")
            assert "waiting for shipping.shipment_scheduled" in reason
            assert "no progress" in reason
            await ui.screenshot("stuck.png", tmp_path)
    finally:
        release.set()


async def _listed(ui: Browser, path: str, table: str = "#sagas") -> list[str]:
    """The saga ids a page lists (loading it afresh)."""
    await ui.open(path)
    return await ui.attributes(f"{table} tbody tr[data-saga-id]", "data-saga-id")


async def park_nasty_messages(system: System, queue: str) -> None:
    """What the consumer parks besides a command that kept failing: a body that is not
    UTF-8, one that is not JSON, an unknown type with markup in its body, type and
    headers, and a body that breaks its contract."""
    bus = system.client.bus
    nasty = [
        aio_pika.Message(
            b"\xff\xfe\x00\x81binary",
            type=AuthorizePayment.TYPE,
            message_id="m-bytes",
            correlation_id="s-bytes",
        ),
        aio_pika.Message(
            b"{not json", type=AuthorizePayment.TYPE, message_id="m-text", correlation_id="s-text"
        ),
        aio_pika.Message(
            b'{"html": "<script>alert(1)</script><b>bold</b>"}',
            type="<img src=x onerror=alert(2)>",
            message_id="m-html",
            correlation_id="s-html",
            headers={"x-note": "<script>alert(3)</script>", "x-bytes": bytearray(b"\xff\x00")},
        ),
        aio_pika.Message(
            b'{"amount_cents": "lots"}', type=AuthorizePayment.TYPE, correlation_id="s-schema"
        ),
    ]
    for message in nasty:
        await bus.publish(message, exchange="", routing_key=queue)


async def test_a_dead_lettered_payment_is_replayed_from_the_page_and_its_saga_completes(
    make_system: SystemFactory, driver: WebDriver, tmp_path: Path
) -> None:
    """Payment kept failing, so its command was dead-lettered, next to messages the
    consumer could not read at all. The page shows every one of them (markup as text,
    nothing run); the replay shows its dry run first and changes nothing until confirmed;
    then the saga completes. The rest is discarded with a reason."""
    system = await with_readside(
        make_system, retry_delays=(0.1,), step_timeout=300.0, step_max_sends=1
    )
    broken = Broken(system.payment.authorize)
    system.payment.on_command(AuthorizePayment, broken)
    saga_id = await system.order(("apple", 1))
    work = resolve_queue(system.settings.topology(), "payment.commands").name
    await park_nasty_messages(system, work)

    async with serve(system.settings) as (url, _app):
        ui = Browser(driver, url)
        await ui.forget()
        await eventually(
            lambda: _opened(ui, "/ui/dead-letters", f"#dlqs tr[data-queue='{work}'] .count"),
            until=lambda count: count == "5",
            what="five payment dead letters",
        )
        await ui.screenshot("dead-letters.png", tmp_path)
        await ui.log_in(TOKEN)
        await ui.open(f"/ui/dead-letters/{work}")
        ids = await ui.attributes(".letter", "data-message-id")
        command_id = next(i for i in ids if i.startswith(saga_id))
        assert len(ids) == 5
        assert {command_id, "m-bytes", "m-text", "m-html"} < set(ids)
        html = await ui.text(".letter[data-message-id='m-html']")
        assert "<script>alert(1)</script><b>bold</b>" in html, "markup shown as text"
        assert "<img src=x onerror=alert(2)>" in html
        assert not await ui.alert_shown()
        assert "base64 (not UTF-8 text)" in await ui.text(".letter[data-message-id='m-bytes']")
        assert "text (not JSON)" in await ui.text(".letter[data-message-id='m-text']")
        assert "retries_exhausted" in await ui.text(f".letter[data-message-id='{command_id}']")
        await ui.screenshot("dead-letter-queue.png", tmp_path)

        await ui.click(f".letter[data-message-id='{command_id}'] button.replay")
        await ui.wait_for("h1", "Dry run: replay")
        where = f"-> (default exchange) / {work}"
        assert await ui.texts("#outcomes tbody tr") == [
            f"{command_id} {saga_id} {AuthorizePayment.TYPE} would be done {where}"
        ]
        await ui.screenshot("replay-dry-run.png", tmp_path)
        still = await peek(system.client.bus, work, limit=10)
        assert len(still) == 5, "the dry run changed nothing"
        assert (await system.client.state(saga_id)).status is Status.RUNNING

        broken.fixed = True
        await ui.click("#confirm")
        await ui.wait_for("h1", "Replayed: 1 of 1")
        assert (await system.settle(saga_id)).status is Status.COMPLETED

        await ui.open(f"/ui/dead-letters/{work}")
        await ui.select("#bulk select[name='everything']", "yes")
        await ui.click("#bulk button.danger")
        await ui.wait_for("h1", "Dry run: discard")
        await ui.fill("#discard-reason", "poison test messages")
        await ui.click("#confirm")
        await ui.wait_for("h1", "Discarded: 4 of 4")
    assert await peek(system.client.bus, work, limit=10) == []
    records = await system.inventory.db["dlq_discards"].find().to_list(None)
    assert len(records) == 4
    assert {"m-bytes", "m-html", "m-text"} < {r["message_id"] for r in records}
    assert {r["reason"] for r in records} == {"poison test messages"}
    assert {r["actor"] for r in records} == {"ui"}
    await system.invariants({"apple": 10}, [saga_id])


async def test_a_parked_saga_is_resumed_from_the_page(
    make_system: SystemFactory, driver: WebDriver, tmp_path: Path
) -> None:
    """VoidPayment kept failing, so the saga was parked. The stuck page says so; the saga
    page refuses a resume without the operator token, and with it resumes the saga,
    which then finishes its compensation."""
    system = await with_readside(
        make_system, retry_delays=(0.1,), step_timeout=1.0, step_max_sends=1
    )
    broken = Broken(system.payment.void)
    system.payment.on_command(AuthorizePayment, Broken(system.payment.authorize))
    system.payment.on_command(VoidPayment, broken)
    saga_id = await system.order(("apple", 1))
    assert (await system.settle(saga_id)).status is Status.COMPENSATION_FAILED

    async with serve(system.settings) as (url, _app):
        ui = Browser(driver, url)
        await ui.forget()
        await eventually(
            lambda: _listed(ui, "/ui/stuck", "#stuck"),
            until=lambda ids: ids == [saga_id],
            what="the parked saga on the stuck page",
        )
        reason = await ui.text(f"#stuck tr[data-saga-id='{saga_id}'] .reason")
        assert reason.startswith("parked at authorize_payment")
        await ui.open(f"/ui/sagas/{saga_id}")
        await ui.wait_for("#status", "compensation_failed")
        assert "no reply to authorize_payment" in await ui.text("#parked-reason")
        await ui.screenshot("parked.png", tmp_path)

        await ui.fill("#resume-form input[name='token']", "not-the-token")
        await ui.click("#resume")
        await ui.wait_for("#problem", "changes need the operator token")
        assert (await system.client.state(saga_id)).status is Status.COMPENSATION_FAILED

        broken.fixed = True
        await ui.open(f"/ui/sagas/{saga_id}")
        await ui.fill("#resume-form input[name='token']", TOKEN)
        await ui.click("#resume")
        await ui.wait_for("#notice", "Resumed")
        await ui.wait_for("#status", "compensated")  # the page follows the saga by itself
        assert "saga resumed" in await ui.text("#events")
    assert (await system.settle(saga_id)).status is Status.COMPENSATED
    await system.invariants({"apple": 10}, [saga_id])


async def _opened(ui: Browser, path: str, css: str) -> str:
    await ui.open(path)
    return await ui.text(css)
