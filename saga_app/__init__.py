"""A durable saga orchestrator on Kafka: the public DSL, the participant API and the pure engine.

Importing this package never imports Faust, so definitions, participants, the engine and the test
kit can be used (and tested) without a broker.
"""

from saga_app.definition import RetryPolicy, SagaDefinition, Step
from saga_app.engine import Decision, IgnoredReason, OutgoingCommand, SagaInput, decide
from saga_app.errors import (
    DefinitionError,
    DefinitionMismatch,
    InvalidEvent,
    SagaError,
    SagaModuleError,
    UnknownSagaType,
)
from saga_app.participant import Participant, Records, Result, failure, retry, success
from saga_app.registry import SagaRegistry, load_sagas
from saga_app.state import HistoryEntry, SagaState, SagaStatus, StepState, StepStatus, Timer
from saga_app.sweeper import DeadlineIndex
from topics import Command

__all__ = [
    "Command",
    "DeadlineIndex",
    "Decision",
    "DefinitionError",
    "DefinitionMismatch",
    "HistoryEntry",
    "IgnoredReason",
    "InvalidEvent",
    "OutgoingCommand",
    "Participant",
    "Records",
    "Result",
    "RetryPolicy",
    "SagaDefinition",
    "SagaError",
    "SagaInput",
    "SagaModuleError",
    "SagaRegistry",
    "SagaState",
    "SagaStatus",
    "Step",
    "StepState",
    "StepStatus",
    "Timer",
    "UnknownSagaType",
    "decide",
    "failure",
    "load_sagas",
    "retry",
    "success",
]
