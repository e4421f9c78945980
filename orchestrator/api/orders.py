"""Placing orders: an ``Idempotency-Key`` makes a retried request return the same saga.

The saga id is derived from the key, and the start command's message id from the saga
id, so even two requests racing with one key publish one start that the orchestrator
deduplicates. A stored record of the key remembers the request, so reusing a key for a
different order is refused instead of silently returning the first saga.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Response, status
from pymongo.errors import DuplicateKeyError

from contracts import PlaceOrder
from orchestrator.api.deps import Services, services
from orchestrator.api.models import OrderAccepted, OrderRequest

__all__ = ["router"]

router = APIRouter(tags=["orders"])
KEYS = uuid.UUID("6f1c1b8e-7d4e-4b8a-9a51-2f7e3b8c0d11")


@router.post("/orders", status_code=status.HTTP_202_ACCEPTED, response_model=OrderAccepted)
async def place_order(
    order: OrderRequest,
    response: Response,
    svc: Annotated[Services, Depends(services)],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> OrderAccepted:
    """Start an order saga. The same ``Idempotency-Key`` always returns the same saga."""
    if not idempotency_key or not idempotency_key.strip():
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            "the Idempotency-Key header is required (any unique string, "
            "reused when the request is retried)",
        )
    key = idempotency_key.strip()
    saga_id = uuid.uuid5(KEYS, key).hex
    fingerprint = hashlib.sha256(order.model_dump_json().encode()).hexdigest()
    keys = svc.db["api_idempotency_keys"]
    created = True
    try:
        await keys.insert_one(
            {"_id": key, "saga_id": saga_id, "request": fingerprint, "at": datetime.now(UTC)}
        )
    except DuplicateKeyError:
        created = False
        seen = await keys.find_one({"_id": key})
        if seen is not None and seen["request"] != fingerprint:
            raise HTTPException(
                422,
                "this Idempotency-Key was used for a different order",
            ) from None
    command = PlaceOrder.model_validate(order.model_dump())
    await svc.client.start(command, saga_id=saga_id)
    if not created:
        response.status_code = status.HTTP_200_OK
    return OrderAccepted(
        saga_id=saga_id, idempotency_key=key, created=created, status_url=f"/sagas/{saga_id}"
    )
