"""A worker stopped mid-batch, cleanly then with kill -9, loses no saga and repeats no effect."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

from tests.integration.saga_system import FINISHED, SagaSystem

BATCH = 30


def start_batch(system: SagaSystem, label: str) -> list[str]:
    ids = []
    for n in range(BATCH):
        saga_id = f"{label}-{n}-{uuid.uuid4().hex[:6]}"
        payload = {
            "customer_id": f"{label}-customer-{n}",
            "items": [{"sku": f"{label}-sku", "qty": 1}],
            "amount": 10.0,
            "simulate": {"charge_payment": "flaky:2"},  # each saga lives ~1 s: crashes hit mid-saga
        }
        ids.append(system.start_saga("create_order", payload, saga_id))
    return ids


def wait_finished(system: SagaSystem, ids: list[str], at_least: int, timeout: float = 90) -> int:
    """Poll until `at_least` of the sagas are finished; returns how many are."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(1 for i in ids if (s := system.get(i)) is not None and s["status"] in FINISHED)
        if done >= at_least:
            return done
        time.sleep(0.2)  # polling interval
    raise AssertionError(f"only some of {len(ids)} sagas finished in {timeout}s")


def test_worker_crash_and_restart_lose_nothing_and_duplicate_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """SIGTERM then kill -9 of the only worker mid-batch: every saga completes, charged once."""
    system = SagaSystem(kafka_bootstrap, tmp_path, f"r{uuid.uuid4().hex[:8]}.").start()
    worker = system.workers[0]
    try:
        first = start_batch(system, "term")
        assert wait_finished(system, first, at_least=3) < BATCH  # stopped mid-batch
        worker.stop(signal.SIGTERM)
        worker.start().wait_ready()

        second = start_batch(system, "kill")
        assert wait_finished(system, second, at_least=3) < BATCH
        worker.stop(signal.SIGKILL)
        worker.start().wait_ready()

        ids = first + second
        wait_finished(system, ids, at_least=len(ids), timeout=120)
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
        assert not_completed == []

        topic = f"{system.catalog.prefix}saga-participants-payments-records-changelog"
        charges = Counter(
            k.decode()
            for k, v in system.read_topic(topic)
            if k and v and json.loads(v)["status"] == "charged"
        )
        assert all(charges[f"payments:{i}"] == 1 for i in ids), charges
    finally:
        system.stop()
