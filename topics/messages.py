"""Pydantic models for every message on the saga topics.

Unknown fields are ignored (producers may be newer than us); missing or mistyped fields are rejected
with an `InvalidMessage` that names the field, so a dead-letter record says what to fix.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

MAX_MESSAGE_BYTES = 256 * 1024
"""Largest message the orchestrator accepts; bigger ones are dead-lettered, not processed."""

MessageKind = Literal["command", "compensation"]
Outcome = Literal["success", "failure", "retry"]
TimerKind = Literal["step", "backoff", "deadline", "retention"]
"""What a timeout wakes up: a step that did not answer, a backoff that elapsed, a saga deadline,
or the end of a finished saga's retention (it is then deleted from the saga table)."""


class Message(BaseModel):
    """Base of all contract messages: immutable, tolerant of extra fields."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class StartSaga(Message):
    """Start a saga; a second start with the same saga_id is a no-op."""

    type: Literal["start"] = "start"
    saga_id: str | None = Field(default=None, min_length=1, max_length=200)
    saga_type: str = Field(min_length=1)
    payload: dict[str, Any] = Field(default_factory=dict)


class AbortSaga(Message):
    """Operator abort: a running saga compensates what it has done."""

    type: Literal["abort"] = "abort"
    saga_id: str = Field(min_length=1)
    reason: str = "aborted by operator"


class RetrySaga(Message):
    """Operator re-drive of a `failed` saga: its stuck compensation is tried again."""

    type: Literal["retry"] = "retry"
    saga_id: str = Field(min_length=1)


class SagaTimeout(Message):
    """A timer of the saga fell due; sent by the sweeper, ignored if the saga has moved on.

    `step`, `kind` and `attempt` name the attempt a `step` or `backoff` timer is for; `deadline`
    and `retention` timers have none.
    """

    type: Literal["timeout"] = "timeout"
    saga_id: str = Field(min_length=1)
    timer: TimerKind
    step: str | None = None
    kind: MessageKind | None = None
    attempt: int | None = None
    due_at: float


class ObservedEvent(Message):
    """A domain event the tracker correlated to a tracked (choreographed) saga, re-keyed by the
    saga id onto `saga.requests` so the saga's own partition applies it (`saga_app.tracking`).

    `event` is the domain event as its service published it on `topic`; which step it marks,
    and how, is read from it against the saga's own definition version when it is applied.
    """

    type: Literal["observed"] = "observed"
    saga_id: str = Field(min_length=1, max_length=200)
    saga_type: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    """Where the service published it, without the topic prefix (as the definition names it)."""
    event: dict[str, Any]


SagaRequest = Annotated[
    StartSaga | AbortSaga | RetrySaga | SagaTimeout | ObservedEvent, Field(discriminator="type")
]

OutcomeType = Literal["saga.completed", "saga.failed", "saga.timeout"]


class SagaOutcome(Message):
    """What the tracker announces on `saga.outcomes` about a tracked saga: every step done
    (`saga.completed`), a step failed or an operator aborted it (`saga.failed`), or its deadline
    passed first (`saga.timeout`). On the last two, each service undoes what it did for the
    saga (the steps in `steps_done`) and publishes its compensation event."""

    type: OutcomeType
    saga_id: str
    saga_type: str
    steps_done: list[str]
    """The steps whose done event had arrived, in the definition's order."""
    compensations: list[str] = Field(default_factory=list)
    """The steps whose compensation event the tracker waits for (done, with one declared)."""
    error: str | None = None
    attempt: int = 1
    """Counts the announcements of this failure: an operator retry announces it again."""
    at: float


class Command(Message):
    """A command or compensation sent to a participant's command topic."""

    message_id: str
    saga_id: str
    saga_type: str
    step: str
    kind: MessageKind
    action: str
    attempt: int = Field(ge=1)
    payload: dict[str, Any] = Field(default_factory=dict)
    reply_to: str

    def reply(
        self,
        outcome: Outcome,
        data: dict[str, Any] | None = None,
        error: str | None = None,
        message_id: str | None = None,
    ) -> Reply:
        """The reply to this command; its id derives from the command's, so a re-send matches."""
        return Reply(
            message_id=message_id or f"{self.message_id}:reply",
            in_reply_to=self.message_id,
            saga_id=self.saga_id,
            step=self.step,
            kind=self.kind,
            attempt=self.attempt,
            outcome=outcome,
            data=data or {},
            error=error,
        )


class Reply(Message):
    """A participant's answer to one command or compensation."""

    message_id: str
    in_reply_to: str
    saga_id: str = Field(min_length=1)
    step: str
    kind: MessageKind
    attempt: int = Field(ge=1)
    outcome: Outcome
    data: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class SagaEvent(Message):
    """One transition of a saga, published to `saga.events` for audit and views."""

    saga_id: str
    saga_type: str
    seq: int
    event: str
    step: str | None = None
    attempt: int | None = None
    status: str
    at: float
    error: str | None = None
    detail: str | None = None
    """For a tracked saga, the domain event behind the transition (`type` on `topic`)."""


class DeadLetter(Message):
    """A message someone could not process: the original bytes (as text) and why."""

    topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    value: str
    error: str
    at: float


class InvalidMessage(ValueError):
    """Raised when bytes on a saga topic are not a valid contract message; says what is wrong."""


_REQUEST = TypeAdapter(SagaRequest)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "message"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def _check_size(raw: bytes) -> None:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(
            f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES} byte limit"
        )


def parse_request(raw: bytes) -> StartSaga | AbortSaga | RetrySaga | SagaTimeout | ObservedEvent:
    """Decode a `saga.requests` value, or raise `InvalidMessage` naming the problem."""
    _check_size(raw)
    try:
        return _REQUEST.validate_json(raw)
    except ValidationError as e:
        raise InvalidMessage(f"invalid request: {_describe(e)}") from None


def parse_reply(raw: bytes) -> Reply:
    """Decode a `saga.replies` value, or raise `InvalidMessage` naming the problem."""
    _check_size(raw)
    try:
        return Reply.model_validate_json(raw)
    except ValidationError as e:
        raise InvalidMessage(f"invalid reply: {_describe(e)}") from None
