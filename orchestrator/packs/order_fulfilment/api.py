"""The order pack's HTTP routes: ``POST /orders`` and stock levels with restocking.

``POST /orders`` is the order saga's start (``POST /definitions/order_fulfilment/sagas``)
under a name an order client expects. Its body *is* the ``PlaceOrder`` contract, so it
is validated exactly as the orchestrator will (one line per SKU, int64 amounts, strict
types) before the Idempotency-Key is stored. Both routes share the key space, so a key
returns the same saga whichever route was used.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, Strict

from contracts import PlaceOrder
from contracts.base import WHOLE
from contracts.orders import Sku
from orchestrator.api.deps import Operator, Reader, Services, Starter, services
from orchestrator.api.idempotency import IdempotencyKey, fingerprint, name_for, remember
from orchestrator.api.models import errors
from orchestrator.api.starts import SAGA_LINKS, START_ERRORS, start_once
from orchestrator.packs.order_fulfilment.commands import restock
from orchestrator.packs.order_fulfilment.stock import StockProjection

__all__ = ["OrderAccepted", "RestockAccepted", "RestockRequest", "StockView", "router"]

router = APIRouter(tags=["orders"])
Svc = Annotated[Services, Depends(services)]
SkuPath = Annotated[Sku, Path(description="Stock keeping unit")]


class OrderAccepted(BaseModel):
    """The saga that fulfils the order."""

    saga_id: str
    idempotency_key: str
    created: bool = Field(description="False if the key was seen before (same saga)")
    status_url: str


class StockView(BaseModel):
    """Stock of one SKU from the read side."""

    sku: str
    available: int
    reserved: int
    shipped: int


class RestockRequest(BaseModel):
    """Units to add."""

    model_config = ConfigDict(extra="forbid")

    units: Annotated[int, Strict(), Field(gt=0, le=10_000_000), WHOLE]
    reason: str = Field(default="", max_length=500)


class RestockAccepted(BaseModel):
    """The restock inventory was asked to do (once per Idempotency-Key)."""

    sku: str
    units: int
    restock_id: str
    created: bool = Field(description="False if the key was seen before (same restock)")


def _stock(svc: Svc) -> StockProjection:
    return StockProjection(database=svc.db)


Stock = Annotated[StockProjection, Depends(_stock)]


@router.post(
    "/orders",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=OrderAccepted,
    responses={
        200: {
            "model": OrderAccepted,
            "description": "Placed before with this key",
            "links": SAGA_LINKS,
        },
        202: {"links": SAGA_LINKS},
        **START_ERRORS,
    },
)
async def place_order(
    order: PlaceOrder,
    response: Response,
    svc: Svc,
    idempotency_key: IdempotencyKey,
    _: Starter,
) -> OrderAccepted:
    """Start an order saga. The same ``Idempotency-Key`` always returns the same saga;
    with a different order it is refused (409). Needs the client or operator token."""
    saga_id, created = await start_once(
        svc, key=idempotency_key, saga_name="order_fulfilment", command=order
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return OrderAccepted(
        saga_id=saga_id,
        idempotency_key=idempotency_key,
        created=created,
        status_url=f"/sagas/{saga_id}",
    )


@router.get("/stock", response_model=list[StockView], tags=["stock"], responses=errors(401, 503))
async def all_stock(
    stock: Stock,
    _: Reader,
    after: Annotated[
        Sku | None, Query(description="Only SKUs after this one (the last of a page)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many")] = 100,
) -> list[StockView]:
    """The SKUs the read side knows, in SKU order, a page at a time."""
    levels = await stock.page(after=after, limit=limit)
    return [StockView(**vars(lv)) for lv in levels]


@router.get(
    "/stock/{sku}",
    response_model=StockView,
    tags=["stock"],
    operation_id="stock_of",
    responses=errors(401, 404, 503),
)
async def stock_of(sku: SkuPath, stock: Stock, _: Reader) -> StockView:
    """One SKU: available, reserved, shipped."""
    levels = (await stock.levels([sku]))[sku]
    if (levels.available, levels.reserved, levels.shipped) == (0, 0, 0):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stock known for SKU {sku!r}")
    return StockView(**vars(levels))


@router.post(
    "/stock/{sku}/restock",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RestockAccepted,
    tags=["stock"],
    responses={
        200: {"model": RestockAccepted, "description": "Asked before with this key"},
        **errors(400, 401, 409, 413, 503),
    },
)
async def restock_sku(
    sku: SkuPath,
    body: RestockRequest,
    response: Response,
    svc: Svc,
    idempotency_key: IdempotencyKey,
    _: Operator,
) -> RestockAccepted:
    """Ask inventory to add units; the read side shows them once inventory has. The
    restock id is derived from the ``Idempotency-Key``, so a retried request adds the
    units once."""
    restock_id = f"restock-{name_for(f'restock:{idempotency_key}')}"
    created = await remember(
        svc.db["api_restock_keys"],
        idempotency_key,
        {
            "restock_id": restock_id,
            "request": fingerprint("restock", {"sku": sku, **body.model_dump()}),
        },
        what="restock",
    )
    await restock(svc.client, sku, body.units, restock_id=restock_id, reason=body.reason)
    if not created:
        response.status_code = status.HTTP_200_OK
    return RestockAccepted(sku=sku, units=body.units, restock_id=restock_id, created=created)
