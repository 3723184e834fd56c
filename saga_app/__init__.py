"""A durable saga orchestrator on Kafka: the public DSL, the participant API and the pure engine;
and for choreographed sagas, the tracked-saga DSL, the event-handler API and the tracker.

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
from saga_app.service import Emit, Event, Service, emit
from saga_app.state import (
    HistoryEntry,
    SagaHead,
    SagaState,
    SagaStatus,
    StepState,
    StepStatus,
    Timer,
    Wakeup,
)
from saga_app.sweeper import DeadlineIndex
from saga_app.tracked import EventPattern, TrackedSagaDefinition, TrackedStep
from saga_app.tracking import announcement, track
from topics import Command

__all__ = [
    "Command",
    "DeadlineIndex",
    "Decision",
    "DefinitionError",
    "DefinitionMismatch",
    "Emit",
    "Event",
    "EventPattern",
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
    "SagaHead",
    "SagaInput",
    "SagaModuleError",
    "SagaRegistry",
    "SagaState",
    "SagaStatus",
    "Service",
    "Step",
    "StepState",
    "StepStatus",
    "Timer",
    "TrackedSagaDefinition",
    "TrackedStep",
    "UnknownSagaType",
    "Wakeup",
    "announcement",
    "decide",
    "emit",
    "failure",
    "load_sagas",
    "retry",
    "success",
    "track",
]
