"""Workers: starts a training worker for a run, stops it as the compensation."""

from __future__ import annotations

from saga_app import Participant, Records, Result, success
from topics import Command

workers = Participant("workers")


@workers.action("start")
def start(command: Command, records: Records) -> Result:
    if records.get(command.saga_id) is None:
        records.put(command.saga_id, {"status": "running"})
    return success(worker_id=f"worker-{command.saga_id}")


@workers.compensation("stop")
def stop(command: Command, records: Records) -> Result:
    record = records.get(command.saga_id)
    if record is not None and record["status"] == "running":
        records.put(command.saga_id, {"status": "stopped"})
    return success()
