"""A delivery the broker refuses for good stops the worker before it commits past the record.

The `orders` command topic is created with a record size limit smaller than any command, so the
worker's first command of a `create_order` saga fails with a non-retriable error. Before commit
gating, faust logged the failure and committed the start request's offset: the saga waited on a
command nobody received until its step timed out. Now the worker stops; once the limit is lifted
a restarted worker reads the start request again and the saga completes.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from tests.integration.saga_system import Deadline, SagaSystem
from tests.integration.test_sagas import order


def test_a_refused_command_stops_the_worker_and_is_sent_again_after_restart(
    kafka_bootstrap: str, tmp_path: Path, deadline: Deadline
) -> None:
    """A command the broker refuses for good stops the worker; restarted, it sends it again."""
    system = SagaSystem(kafka_bootstrap, tmp_path, f"d{uuid.uuid4().hex[:8]}.")
    commands = system.catalog.commands("orders")
    system.create_topic(commands, partitions=4, config={"max.message.bytes": "120"})
    worker = system.workers[0]
    try:
        system.start(deadline.left("the system up"))
        saga_id = system.start_saga("create_order", order(), f"refused-{uuid.uuid4().hex[:8]}")
        assert worker.process is not None
        stop_by = time.monotonic() + min(60, deadline.left("the worker stopped"))
        while worker.process.poll() is None and time.monotonic() < stop_by:
            time.sleep(0.2)  # polling interval
        assert worker.process.poll() is not None, "the worker went on after a refused delivery"
        log = worker.log_path.read_text()
        assert "stopping_worker" in log and commands in log

        system.configure_topic(commands, {"max.message.bytes": "1048588"})
        worker.start().wait_ready(deadline.left("the worker back"))
        saga = system.wait_for(saga_id, timeout=deadline.left("the saga completed"))
        assert saga["status"] == "completed", saga
    finally:
        system.stop()
