"""Orders: creates an order for a saga, and cancels it as the compensation."""

from __future__ import annotations

from saga_app import Participant, Records, Result, failure, success
from topics import Command

orders = Participant("orders")


@orders.action("create_order")
def create_order(command: Command, records: Records) -> Result:
    payload = command.payload
    items = payload.get("items")
    if not isinstance(items, list) or not items:
        return failure("an order needs items: [{sku, qty}, ...]")
    existing = records.get(command.saga_id)
    if existing is None:
        records.put(
            command.saga_id,
            {
                "order_id": command.saga_id,
                "status": "pending",
                "customer_id": payload.get("customer_id"),
                "items": items,
                "amount": payload.get("amount", 0),
            },
        )
    return success(order_id=command.saga_id)


@orders.compensation("cancel_order")
def cancel_order(command: Command, records: Records) -> Result:
    order = records.get(command.saga_id)
    if order is not None and order["status"] != "cancelled":
        records.put(command.saga_id, {**order, "status": "cancelled"})
    return success()
