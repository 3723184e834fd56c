"""Resources: a pool of compute units (SAGA_RESOURCE_POOL, default 1,000) allocated per saga."""

from __future__ import annotations

import os
from typing import Any

from saga_app import Participant, Records, Result, failure, success
from topics import Command

POOL = int(os.environ.get("SAGA_RESOURCE_POOL", "1000"))

in_use = {"units": 0}
"""Units held by live allocations: derived from the records, rebuilt after recovery."""


def _rebuild(records: Records) -> None:
    in_use["units"] = sum(r["units"] for r in records.values() if r["status"] == "allocated")


resources = Participant("resources", on_load=_rebuild)


def requested_units(requested: Any) -> int:
    """`resources` may be a count or a mapping of kinds to counts (e.g. {"gpus": 2, "cpus": 8})."""
    if isinstance(requested, dict):
        return sum(int(v) for v in requested.values())
    return int(requested or 0)


def _allocate(command: Command, records: Records) -> Result:
    if records.get(command.saga_id) is not None:
        return success(allocation_id=command.saga_id)
    try:
        units = requested_units(command.payload.get("resources", 1))
    except (TypeError, ValueError):
        return failure("resources must be a count or a mapping of kinds to counts")
    if units < 0 or in_use["units"] + units > POOL:
        return failure(f"not enough resources: want {units}, free {POOL - in_use['units']}")
    records.put(command.saga_id, {"status": "allocated", "units": units})
    in_use["units"] += units
    return success(allocation_id=command.saga_id)


def _release(command: Command, records: Records) -> Result:
    allocation = records.get(command.saga_id)
    if allocation is None:
        records.put(command.saga_id, {"status": "released", "units": 0})  # block a late allocate
    elif allocation["status"] == "allocated":
        records.put(command.saga_id, {**allocation, "status": "released"})
        in_use["units"] -= allocation["units"]
    return success()


for _action in ("allocate", "reserve"):
    resources.action(_action)(_allocate)
resources.compensation("release")(_release)
