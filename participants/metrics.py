"""Metrics: initialises an experiment's metric store, cleans it up as the compensation."""

from __future__ import annotations

from saga_app import Participant, Records, Result, success
from topics import Command

metrics = Participant("metrics")


@metrics.action("initialize")
def initialize(command: Command, records: Records) -> Result:
    if records.get(command.saga_id) is None:
        records.put(command.saga_id, {"status": "initialized"})
    return success(metrics_namespace=f"metrics/{command.saga_id}")


@metrics.compensation("cleanup")
def cleanup(command: Command, records: Records) -> Result:
    if records.get(command.saga_id) is not None:
        records.put(command.saga_id, {"status": "cleaned_up"})
    return success()
