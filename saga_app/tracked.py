"""The tracked saga DSL: the domain events that make up a saga nobody orchestrates.

In a choreography each service reacts to the previous one's event and no one sends commands, so
no one knows whether the saga finished. A `TrackedSagaDefinition` says, per step, which event
marks it done, which marks its failure and which its service publishes once it has undone it;
the tracker (`saga_app.tracking`) follows each saga by those events alone, and announces on
`saga.outcomes` when it completed, failed or ran out of time. Frozen data, checked when built,
loaded like `SagaDefinition`s (DESIGN.md, "Choreography tracking").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from saga_app.definition import check_name
from saga_app.errors import DefinitionError

EventPredicate = Callable[[Mapping[str, Any]], bool]
"""Says whether a domain event (its JSON object) is the one meant; must not raise."""

Role = Literal["started", "done", "failed", "compensated"]
"""What an event means for its step: the saga began, the step was done, failed, or undone."""


@dataclass(frozen=True, slots=True)
class EventPattern:
    """The domain events on `topic` whose type field is `type` (any, if None) and that `where`
    accepts (all, if None). Topic names are given without `SAGA_TOPIC_PREFIX`."""

    topic: str
    """The services' topic the event is published on, e.g. `resources.events`."""
    type: str | None = None
    """The value of the event's type field (`TrackedSagaDefinition.type_field`)."""
    where: EventPredicate | None = None
    """A predicate on the event's fields, for events that a type alone does not tell apart."""

    def __post_init__(self) -> None:
        check_name("event topic", self.topic)
        if self.type is None and self.where is None:
            raise DefinitionError(
                f"an event pattern on {self.topic!r} needs a type or a `where` predicate: "
                "otherwise every event on the topic would match"
            )

    def matches(self, topic: str, event: Mapping[str, Any], type_field: str) -> bool:
        if topic != self.topic or (self.type is not None and event.get(type_field) != self.type):
            return False
        return self.where is None or bool(self.where(event))

    @property
    def where_name(self) -> str | None:
        """The predicate as people read it: its function's name."""
        return None if self.where is None else getattr(self.where, "__name__", repr(self.where))

    def describe(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "type": self.type,
            "where": self.where_name,
            "label": str(self),
        }

    def __str__(self) -> str:
        return f"{self.type or self.where_name} on {self.topic}"


@dataclass(frozen=True, slots=True)
class TrackedStep:
    """One service's part of a tracked saga, known only by the events it publishes."""

    name: str
    """Unique within the saga; keys the views and metrics."""
    service: str
    """Who does it (shown in the views; the tracker sends it nothing)."""
    done: EventPattern
    """The event that marks the step done."""
    failed: EventPattern | None = None
    """The event that marks its failure: the saga then rolls back (`saga.failed`)."""
    compensated: EventPattern | None = None
    """The event the service publishes once it has undone the step; None: nothing to undo, so
    the tracker waits for no compensation from it."""

    def __post_init__(self) -> None:
        check_name("step name", self.name)
        check_name(f"service of step {self.name!r}", self.service)

    def patterns(self) -> list[tuple[Role, EventPattern]]:
        found: list[tuple[Role, EventPattern | None]] = [
            ("done", self.done),
            ("failed", self.failed),
            ("compensated", self.compensated),
        ]
        return [(role, pattern) for role, pattern in found if pattern is not None]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "service": self.service,
            "participant": self.service,
            "done": self.done.describe(),
            "failed": None if self.failed is None else self.failed.describe(),
            "compensated": None if self.compensated is None else self.compensated.describe(),
            "compensation": None if self.compensated is None else str(self.compensated),
        }


@dataclass(frozen=True, slots=True)
class TrackedSagaDefinition:
    """A choreographed saga type: its steps' events, its deadline, and where its id is."""

    name: str
    """The saga type, as the views and `saga.outcomes` name it."""
    version: int
    """Recorded in every saga's state; a running saga keeps the version it began on."""
    steps: tuple[TrackedStep, ...]
    """Listed in the order they usually happen; their events may arrive in any order."""
    deadline: float
    """Seconds after the saga's first event by which every step must be done; past it the
    tracker announces `saga.timeout` and waits for the compensations."""
    compensation_deadline: float = 30.0
    """Seconds after `saga.failed` / `saga.timeout` by which every compensation event must have
    arrived; past it the saga is `failed`, for an operator (a retry announces it again)."""
    started: EventPattern | None = None
    """An event that begins the saga before any step is done (e.g. the user's request), so a
    first service that never publishes still times out. None: the first step event begins it."""
    saga_id_field: str = "saga_id"
    """The event field that holds the saga id."""
    type_field: str = "type"
    """The event field that holds the event's type."""
    _roles: tuple[tuple[str | None, Role, EventPattern], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        check_name("saga name", self.name)
        if self.version < 1:
            raise DefinitionError(f"saga {self.name!r}: version must be >= 1, got {self.version}")
        if not self.steps:
            raise DefinitionError(f"saga {self.name!r} needs at least one step")
        for what, seconds in (
            ("deadline", self.deadline),
            ("compensation_deadline", self.compensation_deadline),
        ):
            if not seconds > 0:
                raise DefinitionError(f"saga {self.name!r}: {what} must be > 0, got {seconds}")
        if not self.saga_id_field or not self.type_field:
            raise DefinitionError(f"saga {self.name!r}: saga_id_field and type_field are needed")
        names = [step.name for step in self.steps]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise DefinitionError(f"saga {self.name!r}: step name {twice[0]!r} is used twice")
        roles: list[tuple[str | None, Role, EventPattern]] = []
        if self.started is not None:
            roles.append((None, "started", self.started))
        roles += [(step.name, role, p) for step in self.steps for role, p in step.patterns()]
        patterns = [pattern for _, _, pattern in roles]
        for pattern in patterns:
            if patterns.count(pattern) > 1:
                raise DefinitionError(
                    f"saga {self.name!r}: the event {pattern} is given twice, so it could not "
                    "tell which step it marks; give each a distinct type or `where`"
                )
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "_roles", tuple(roles))

    @property
    def topics(self) -> list[str]:
        """The services' topics its events are on (the tracker consumes them)."""
        return sorted({pattern.topic for _, _, pattern in self._roles})

    def saga_id_of(self, event: Mapping[str, Any]) -> str | None:
        """The saga an event belongs to, or None if it names none."""
        value = event.get(self.saga_id_field)
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            return None
        return str(value)

    def match(self, topic: str, event: Mapping[str, Any]) -> list[tuple[str | None, Role]]:
        """What the event on `topic` means for this saga type: (step, role) for each pattern it
        matches (step None for `started`); empty if it means nothing to it."""
        return [
            (step, role)
            for step, role, pattern in self._roles
            if pattern.matches(topic, event, self.type_field)
        ]

    @property
    def first_event(self) -> EventPattern:
        """The event a saga of this type begins with, as far as anyone can say beforehand."""
        return self.started or self.steps[0].done

    def index_of(self, step_name: str) -> int | None:
        for i, step in enumerate(self.steps):
            if step.name == step_name:
                return i
        return None

    def describe(self) -> dict[str, Any]:
        """The definition as plain JSON-able data (what `GET /definitions` lists)."""
        return {
            "name": self.name,
            "version": self.version,
            "kind": "tracked",
            "deadline": self.deadline,
            "compensation_deadline": self.compensation_deadline,
            "started": None if self.started is None else self.started.describe(),
            "starts_with": str(self.first_event),
            "saga_id_field": self.saga_id_field,
            "pivot": None,
            "steps": [step.describe() for step in self.steps],
        }
