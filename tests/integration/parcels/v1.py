"""ship_parcel version 1: pack only. Long timeouts: sagas wait in flight across redeploys."""

from saga_app import SagaDefinition, Step

PACK = Step(name="pack", participant="packer", action="pack", compensation="unpack", timeout=60)

SHIP_PARCEL_V1 = SagaDefinition(name="ship_parcel", version=1, steps=(PACK,))
