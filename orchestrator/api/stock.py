"""Stock per SKU (the read side's projection) and restocking (through inventory)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, status

from contracts.orders import Sku
from orchestrator.api.deps import Operator, Services, services
from orchestrator.api.models import RestockRequest, StockView

__all__ = ["router"]

router = APIRouter(tags=["stock"])
Svc = Annotated[Services, Depends(services)]
SkuPath = Annotated[Sku, Path(description="Stock keeping unit")]


@router.get("/stock", response_model=list[StockView])
async def all_stock(svc: Svc) -> list[StockView]:
    """Every SKU the read side knows."""
    levels = await svc.stock.levels()
    return [StockView(**vars(lv)) for lv in levels.values()]


@router.get("/stock/{sku}", response_model=StockView)
async def stock_of(sku: SkuPath, svc: Svc) -> StockView:
    """One SKU: available, reserved, shipped."""
    levels = (await svc.stock.levels([sku]))[sku]
    if (levels.available, levels.reserved, levels.shipped) == (0, 0, 0):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stock known for SKU {sku!r}")
    return StockView(**vars(levels))


@router.post("/stock/{sku}/restock", status_code=status.HTTP_202_ACCEPTED)
async def restock(sku: SkuPath, body: RestockRequest, svc: Svc, _: Operator) -> dict[str, object]:
    """Ask inventory to add units; the read side shows them once inventory has."""
    restock_id = await svc.client.restock(sku, body.units, reason=body.reason)
    return {"sku": sku, "units": body.units, "restock_id": restock_id}
