"""Payments: charges a customer within a credit limit (SAGA_CREDIT_LIMIT, default 1,000)."""

from __future__ import annotations

import os
from collections import defaultdict

from saga_app import Participant, Records, Result, failure, success
from topics import Command

CREDIT_LIMIT = float(os.environ.get("SAGA_CREDIT_LIMIT", "1000"))

charged: defaultdict[str, float] = defaultdict(float)
"""Outstanding charges per customer: derived from the records, rebuilt after recovery."""


def _rebuild(records: Records) -> None:
    charged.clear()
    for payment in records.values():
        if payment["status"] == "charged":
            charged[payment["customer_id"]] += payment["amount"]


payments = Participant("payments", on_load=_rebuild)


@payments.action("charge")
def charge(command: Command, records: Records) -> Result:
    if records.get(command.saga_id) is not None:
        return success(payment_id=command.saga_id)
    customer = str(command.payload.get("customer_id", ""))
    amount = float(command.payload.get("amount", 0))
    if amount <= 0:
        return failure(f"amount must be positive, got {amount}")
    if charged[customer] + amount > CREDIT_LIMIT:
        return failure(
            f"credit limit exceeded for customer {customer}: "
            f"{charged[customer]:.2f} charged + {amount:.2f} > {CREDIT_LIMIT:.2f}"
        )
    records.put(command.saga_id, {"status": "charged", "customer_id": customer, "amount": amount})
    charged[customer] += amount
    return success(payment_id=command.saga_id)


@payments.compensation("refund")
def refund(command: Command, records: Records) -> Result:
    payment = records.get(command.saga_id)
    if payment is not None and payment["status"] == "charged":
        records.put(command.saga_id, {**payment, "status": "refunded"})
        charged[payment["customer_id"]] -= payment["amount"]
    return success()
