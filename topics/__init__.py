"""Topic names and the message schemas of the public contract (DESIGN.md, "Messages")."""

from topics.catalog import TopicCatalog
from topics.messages import (
    MAX_MESSAGE_BYTES,
    AbortSaga,
    Command,
    DeadLetter,
    InvalidMessage,
    MessageKind,
    Outcome,
    Reply,
    RetrySaga,
    SagaEvent,
    SagaRequest,
    SagaTimeout,
    StartSaga,
    TimerKind,
    parse_reply,
    parse_request,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "AbortSaga",
    "Command",
    "DeadLetter",
    "InvalidMessage",
    "MessageKind",
    "Outcome",
    "Reply",
    "RetrySaga",
    "SagaEvent",
    "SagaRequest",
    "SagaTimeout",
    "StartSaga",
    "TimerKind",
    "TopicCatalog",
    "parse_reply",
    "parse_request",
]
