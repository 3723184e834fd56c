"""ship_parcel version 2: pack, then ship."""

from saga_app import SagaDefinition, Step
from tests.integration.parcels.v1 import PACK

SHIP = Step(name="ship", participant="shipper", action="ship", compensation="recall", timeout=60)

SHIP_PARCEL_V2 = SagaDefinition(name="ship_parcel", version=2, steps=(PACK, SHIP))
