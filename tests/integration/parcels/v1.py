"""ship_parcel version 1: pack only. Long timeouts: sagas wait in flight across redeploys, and a
pack that timed out (re-sent, compensated) would change the histories the test checks, so the
timeout is longer than the test may run (its pytest timeout)."""

from saga_app import SagaDefinition, Step

PACK = Step(name="pack", participant="packer", action="pack", compensation="unpack", timeout=600)

SHIP_PARCEL_V1 = SagaDefinition(name="ship_parcel", version=1, steps=(PACK,))
