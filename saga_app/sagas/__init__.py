"""The example sagas of DESIGN.md, one per module: what a worker runs when given no `--sagas`.

A module of your own offers its sagas the same way: `SagaDefinition`s (and
`TrackedSagaDefinition`s) at its top level.
"""

from __future__ import annotations

from saga_app.sagas.create_experiment import CREATE_EXPERIMENT
from saga_app.sagas.create_experiment_choreo import CREATE_EXPERIMENT_CHOREO
from saga_app.sagas.create_order import CREATE_ORDER
from saga_app.sagas.create_run import CREATE_RUN

__all__ = ["CREATE_EXPERIMENT", "CREATE_EXPERIMENT_CHOREO", "CREATE_ORDER", "CREATE_RUN"]
