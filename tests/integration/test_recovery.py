"""A worker stopped mid-batch, cleanly then with kill -9, loses no saga and repeats no effect."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from services import http_json

from tests.integration.saga_system import FINISHED, Deadline, SagaSystem

BATCH = 30
AMOUNT = 10.0
CUSTOMER = f"crash-{uuid.uuid4().hex[:6]}"
"""One customer for every saga: a second charge of any of them would show in its credit."""
CREDIT_LIMIT = 1000.0
TEST_TIMEOUT = 240
"""This test's pytest timeout, over the suite's 120 s: it starts a system, restarts its worker
twice and runs two batches and two probes to the end, about 60 s on a loaded machine, plus up to
40 s for the session's broker when it runs first. Its waits share what is left (`deadline`)."""


def start_batch(system: SagaSystem, label: str) -> list[str]:
    """Start BATCH orders at once, all charging the one shared customer."""
    payload = {
        "customer_id": CUSTOMER,
        "items": [{"sku": f"{label}-sku", "qty": 1}],
        "amount": AMOUNT,
        # Retries with backoff make each saga live ~5 s, so the crashes land mid-saga,
        # with timers pending.
        "simulate": {"charge_payment": "flaky:2", "send_confirmation": "flaky:5"},
    }
    ids = [f"{label}-{n}-{uuid.uuid4().hex[:6]}" for n in range(BATCH)]
    return system.start_sagas([("create_order", payload, saga_id) for saga_id in ids])


def wait_for_sagas(
    system: SagaSystem,
    ids: list[str],
    where: Callable[[dict[str, Any]], bool],
    at_least: int,
    timeout: float,
) -> int:
    """Poll the cluster list until `at_least` of the sagas match `where`; returns how many do."""
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        status, sagas = http_json("GET", f"{system.url}/sagas?limit=1000")
        if status == 200:
            count = sum(1 for s in sagas if s["saga_id"] in wanted and where(s))
            if count >= at_least:
                return count
        time.sleep(0.1)  # polling interval
    raise AssertionError(
        f"{count} of {len(ids)} sagas {where.__name__}, not {at_least}, after {timeout:.0f}s"
    )


def at_confirmation(saga: dict[str, Any]) -> bool:
    return saga["step"] == "send_confirmation"


def finished(saga: dict[str, Any]) -> bool:
    return saga["status"] in FINISHED


def charge(system: SagaSystem, amount: float, timeout: float) -> dict[str, Any]:
    """An order charging the shared customer `amount`; it completes only within the limit."""
    payload = {"customer_id": CUSTOMER, "items": [{"sku": "probe", "qty": 1}], "amount": amount}
    saga_id = system.start_saga("create_order", payload, f"probe-{uuid.uuid4().hex[:8]}")
    return system.wait_for(saga_id, timeout=timeout)


@pytest.mark.timeout(TEST_TIMEOUT)
def test_worker_crash_and_restart_lose_nothing_and_duplicate_nothing(
    kafka_bootstrap: str, tmp_path: Path, deadline: Deadline
) -> None:
    """SIGTERM then kill -9 of the only worker mid-batch: every saga completes, charged once."""
    system = SagaSystem(kafka_bootstrap, tmp_path, f"r{uuid.uuid4().hex[:8]}.")
    try:
        system.start(deadline.left("the system up"))
        # A settling group could hold a charge's last attempt past its 3 s timeout.
        system.warm_up(deadline.left("the warm-up sagas"))
        worker = system.workers[0]
        first = start_batch(system, "term")
        # Some sagas past the pivot, retrying the confirmation: crash with timers pending.
        wait_for_sagas(system, first, at_confirmation, 3, deadline.left("first batch"))
        worker.stop(signal.SIGTERM)
        worker.start().wait_ready(deadline.left("worker back after SIGTERM"))

        second = start_batch(system, "kill")
        wait_for_sagas(system, second, at_confirmation, 3, deadline.left("second batch"))
        worker.stop(signal.SIGKILL)
        worker.start().wait_ready(deadline.left("worker back after kill -9"))

        ids = first + second
        wait_for_sagas(system, ids, finished, len(ids), deadline.left("both batches finished"))
        sagas = [system.get(i) or {} for i in ids]
        not_completed = [
            (
                s["saga_id"],
                s["error"],
                [(h["event"], h["step"], h["attempt"], h["at"]) for h in s["history"]],
            )
            for s in sagas
            if s.get("status") != "completed"
        ]
        assert not not_completed, "\n".join(map(str, not_completed[:2]))

        # Charged exactly once each: the rest of the credit limit is left, and not a cent more.
        rest = CREDIT_LIMIT - AMOUNT * len(ids)
        over = charge(system, rest + AMOUNT, deadline.left("a charge over the limit"))
        assert over["status"] == "compensated", over["error"]
        within = charge(system, rest, deadline.left("a charge up to the limit"))
        assert within["status"] == "completed", within["error"]
    finally:
        system.stop()
