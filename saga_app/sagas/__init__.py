"""The example sagas of DESIGN.md, one per module, and the registry the orchestrator uses."""

from __future__ import annotations

from saga_app.definition import SagaDefinition
from saga_app.errors import UnknownSagaType
from saga_app.sagas.create_experiment import CREATE_EXPERIMENT
from saga_app.sagas.create_order import CREATE_ORDER
from saga_app.sagas.create_run import CREATE_RUN

DEFINITIONS: dict[str, SagaDefinition] = {
    definition.name: definition for definition in (CREATE_ORDER, CREATE_EXPERIMENT, CREATE_RUN)
}
"""Every saga type this orchestrator runs, by name."""


def get_definition(name: str) -> SagaDefinition:
    """The definition of saga type `name`; `UnknownSagaType` (listing the known ones) if none."""
    try:
        return DEFINITIONS[name]
    except KeyError:
        raise UnknownSagaType(name, DEFINITIONS) from None


__all__ = ["CREATE_EXPERIMENT", "CREATE_ORDER", "CREATE_RUN", "DEFINITIONS", "get_definition"]
