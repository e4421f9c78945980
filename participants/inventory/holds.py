"""What a hold is, and what becomes of it once its reservation is decided.

A hold is ``holds.<saga_id>`` in a SKU's stock document: ``{"n": units, "t": token}``,
the token of the reserve attempt that made it (a plain number of units before holds had
tokens). A decided reservation's lines and tokens never change, so the fate of a hold
is certain once its reservation is decided (see :func:`fate`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from contracts import OrderLine

__all__ = ["COUNTS", "LEGACY", "fate", "hold_token", "hold_units", "saga_hold", "units_per_sku"]

LEGACY = ""
"""The token of a hold written before holds had tokens (a plain number of units)."""
COUNTS = ("reserved", "shipped")
"""Statuses whose reservation counts on its holds."""


def hold_units(hold: Any) -> int:
    """Units of a hold."""
    return int(hold["n"]) if isinstance(hold, dict) else int(hold)


def hold_token(hold: Any) -> str:
    """Token of a hold (:data:`LEGACY` for a plain number)."""
    return str(hold.get("t", LEGACY)) if isinstance(hold, dict) else LEGACY


def fate(reservation: dict[str, Any] | None, sku: str, token: str) -> str | None:
    """Where the hold with ``token`` on ``sku`` goes, given its saga's reservation: None
    (it stays: undecided, so it may still be the one the decision counts on, or counted
    by a ``reserved`` reservation), ``shipped`` (a shipped reservation counts on it: a
    ship cut short) or ``available`` (nothing counts on it, nothing ever will)."""
    status = reservation.get("status") if reservation else None
    if status is None or status == "reserving":  # "reserving": the version before the fence
        return None
    assert reservation is not None
    counted = {x["sku"]: x.get("token") or LEGACY for x in reservation.get("lines") or []}
    if status in COUNTS and counted.get(sku) == token:
        return None if status == "reserved" else "shipped"
    return "available"


def saga_hold(doc: dict[str, Any], saga_id: str) -> Any:
    """The saga's hold in a stock document read with the projection ``holds.<saga_id>``
    (the embedded development server returns that projection under the dotted name)."""
    entry = (doc.get("holds") or {}).get(saga_id)
    return entry if entry is not None else doc.get(f"holds.{saga_id}")


def units_per_sku(lines: Iterable[OrderLine]) -> dict[str, int]:
    """Units per SKU, in SKU order (a SKU on two lines is held once, for both)."""
    wanted: dict[str, int] = {}
    for line in lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    return dict(sorted(wanted.items()))
