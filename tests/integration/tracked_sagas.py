"""`ship_parcel_choreo`: a tracked saga no example service takes part in, for tests that publish
its events themselves, in any order, keyed by anything.

Its saga id is the event's `order_id`, and its label step is told by a predicate on the event's
fields, not by a type. Short deadlines, so a test sees the timeout within seconds.
"""

from collections.abc import Mapping
from typing import Any

from saga_app.tracked import EventPattern, TrackedSagaDefinition, TrackedStep

WAREHOUSE, COURIER = "warehouse.events", "courier.events"


def has_label(event: Mapping[str, Any]) -> bool:
    """A parcel update that carries a shipping label."""
    return bool(event.get("label"))


SHIP_PARCEL_CHOREO = TrackedSagaDefinition(
    name="ship_parcel_choreo",
    version=1,
    deadline=8.0,
    compensation_deadline=4.0,
    saga_id_field="order_id",
    steps=(
        TrackedStep(
            name="pack",
            service="warehouse",
            done=EventPattern(WAREHOUSE, "parcel.packed"),
            failed=EventPattern(WAREHOUSE, "parcel.damaged"),
            compensated=EventPattern(WAREHOUSE, "parcel.unpacked"),
        ),
        TrackedStep(
            name="label",
            service="warehouse",
            done=EventPattern(WAREHOUSE, "parcel.updated", where=has_label),
        ),
        TrackedStep(
            name="pick_up",
            service="courier",
            done=EventPattern(COURIER, "parcel.picked_up"),
            failed=EventPattern(COURIER, "pickup.failed"),
        ),
    ),
)
