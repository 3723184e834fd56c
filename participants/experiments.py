"""Experiments: creates experiments and runs, deletes them as compensations."""

from __future__ import annotations

from saga_app import Participant, Records, Result, failure, success
from topics import Command

experiments = Participant("experiments")


def _create(command: Command, records: Records, kind: str, required: str) -> Result:
    if not command.payload.get(required):
        return failure(f"a {kind} needs a {required!r}")
    ident = f"{kind}-{command.saga_id}"
    if records.get(ident) is None:
        records.put(ident, {"status": "created", "saga_id": command.saga_id})
    return success(**{f"{kind}_id": ident})


def _delete(records: Records, ident: str) -> Result:
    record = records.get(ident)
    if record is not None and record["status"] != "deleted":
        records.put(ident, {**record, "status": "deleted"})
    return success()


@experiments.action("create")
def create(command: Command, records: Records) -> Result:
    return _create(command, records, "experiment", "name")


@experiments.compensation("delete")
def delete(command: Command, records: Records) -> Result:
    return _delete(records, f"experiment-{command.saga_id}")


@experiments.action("create_run")
def create_run(command: Command, records: Records) -> Result:
    return _create(command, records, "run", "experiment_id")


@experiments.compensation("delete_run")
def delete_run(command: Command, records: Records) -> Result:
    return _delete(records, f"run-{command.saga_id}")
