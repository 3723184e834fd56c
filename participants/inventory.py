"""Inventory: reserves stock per sku (1,000 per sku unless SAGA_STOCK_PER_SKU says otherwise)."""

from __future__ import annotations

import os
from collections import Counter

from saga_app import Participant, Records, Result, failure, success
from topics import Command

STOCK_PER_SKU = int(os.environ.get("SAGA_STOCK_PER_SKU", "1000"))

reserved: Counter[str] = Counter()
"""Units held by live reservations, per sku: derived from the records, rebuilt after recovery."""


def _rebuild(records: Records) -> None:
    reserved.clear()
    for reservation in records.values():
        if reservation["status"] == "reserved":
            reserved.update(reservation["items"])


inventory = Participant("inventory", on_load=_rebuild)


def available(sku: str) -> int:
    return STOCK_PER_SKU - reserved[sku]


@inventory.action("reserve_stock")
def reserve_stock(command: Command, records: Records) -> Result:
    if records.get(command.saga_id) is not None:
        return (
            success()
        )  # this saga's stock is already reserved (or was released): no second effect
    wanted: Counter[str] = Counter()
    for item in command.payload.get("items", []):
        wanted[str(item["sku"])] += int(item["qty"])
    short = [
        f"{sku} (want {qty}, have {available(sku)})"
        for sku, qty in wanted.items()
        if qty > available(sku)
    ]
    if short:
        return failure("insufficient stock for " + ", ".join(short))
    records.put(command.saga_id, {"status": "reserved", "items": dict(wanted)})
    reserved.update(wanted)
    return success(reserved=dict(wanted))


@inventory.compensation("release_stock")
def release_stock(command: Command, records: Records) -> Result:
    reservation = records.get(command.saga_id)
    if reservation is None:
        records.put(command.saga_id, {"status": "released", "items": {}})  # block a late reserve
    elif reservation["status"] == "reserved":
        records.put(command.saga_id, {**reservation, "status": "released"})
        reserved.subtract(reservation["items"])
    return success()
