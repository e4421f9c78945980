"""The low-stock webhook: one HTTP client for every delivery, failures are transient."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from orchestrator.errors import TransientError
from orchestrator.packs.order_fulfilment.lowstock import LowStock, WebhookNotifier


def note(n: int) -> LowStock:
    return LowStock(id=f"kiwi:{n}", sku="kiwi", available=1, threshold=5, at=datetime.now(UTC))


async def test_deliveries_share_one_client_and_a_failure_is_transient() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503 if len(seen) == 3 else 204)

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    notifier = WebhookNotifier("http://hooks.invalid/low-stock", client=client)

    await notifier.deliver(note(1))
    await notifier.deliver(note(2))
    assert notifier.client is client
    with pytest.raises(TransientError, match="503"):
        await notifier.deliver(note(3))
    assert [r.url.path for r in seen] == ["/low-stock"] * 3
    assert seen[0].read().startswith(b'{"id":"kiwi:1"')

    await notifier.close()
    assert client.is_closed


async def test_the_client_is_made_once_at_the_first_delivery() -> None:
    notifier = WebhookNotifier("http://hooks.invalid/x", timeout=2.0)
    first = notifier.client
    assert notifier.client is first
    assert first.timeout.connect == 2.0
    await notifier.close()
    assert first.is_closed
    await notifier.close()  # twice is harmless
