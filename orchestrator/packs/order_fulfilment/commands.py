"""Commands of the order domain that are not saga steps: restocking."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from contracts import RestockStock

if TYPE_CHECKING:
    from orchestrator.client import SagaClient

__all__ = ["restock"]


async def restock(
    client: SagaClient, sku: str, units: int, *, restock_id: str | None = None, reason: str = ""
) -> str:
    """Ask inventory to add units (once per restock id); returns the restock id."""
    restock_id = restock_id or f"restock-{uuid.uuid4().hex}"
    command = RestockStock(sku=sku, units=units, reason=reason)
    await client.send(command, message_id=restock_id, correlation_id=restock_id)
    return restock_id
