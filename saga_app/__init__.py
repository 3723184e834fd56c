"""A durable saga orchestrator on Kafka: the public DSL and the pure engine.

Importing this package never imports Faust, so definitions, the engine and the test kit can be
used (and tested) without a broker.
"""

from saga_app.definition import RetryPolicy, SagaDefinition, Step
from saga_app.engine import Decision, IgnoredReason, OutgoingCommand, SagaInput, decide
from saga_app.errors import (
    DefinitionError,
    DefinitionMismatch,
    InvalidEvent,
    SagaError,
    UnknownSagaType,
)
from saga_app.state import HistoryEntry, SagaState, SagaStatus, StepState, StepStatus, Timer
from saga_app.sweeper import DeadlineIndex

__all__ = [
    "DeadlineIndex",
    "Decision",
    "DefinitionError",
    "DefinitionMismatch",
    "HistoryEntry",
    "IgnoredReason",
    "InvalidEvent",
    "OutgoingCommand",
    "RetryPolicy",
    "SagaDefinition",
    "SagaError",
    "SagaInput",
    "SagaState",
    "SagaStatus",
    "Step",
    "StepState",
    "StepStatus",
    "Timer",
    "UnknownSagaType",
    "decide",
]
