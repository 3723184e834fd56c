"""The saga definition DSL: a saga is frozen data, checked when it is built.

A definition never changes while sagas run on it, so the engine can trust it: every check that
would otherwise surface mid-saga (duplicate step names, a zero timeout, a pivot followed by a step
that could need undoing) fails here, at import time, with a message that says what to fix.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from saga_app.errors import DefinitionError

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
"""Names go into message ids (`{saga_id}:{step}:{kind}:{attempt}`) and topic names: no `:`."""


def check_name(what: str, value: str) -> None:
    """Raise `DefinitionError` unless `value` can go into message ids and topic names."""
    if not _NAME.match(value):
        raise DefinitionError(
            f"{what} {value!r} must be non-empty and use only letters, digits, '_', '.' or '-'"
        )


def _unit_interval(seed: str) -> float:
    """A number in [0, 1) derived from `seed` alone: jitter that a replay reproduces exactly."""
    digest = hashlib.blake2b(seed.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often, and how far apart, a command or compensation is tried (Temporal's RetryPolicy)."""

    max_attempts: int = 3
    """Attempts in all, the first one included; 1 means never retry."""
    initial_delay: float = 0.5
    """Seconds to wait before the second attempt; 0 re-sends at once."""
    multiplier: float = 2.0
    """Each further delay is the previous one times this (>= 1)."""
    max_delay: float = 10.0
    """No delay is longer than this many seconds, however many attempts were made."""
    jitter: float = 0.1
    """Each delay is shortened by up to this fraction of itself (0 <= jitter < 1), so sagas that
    failed together do not all retry in the same instant."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise DefinitionError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.initial_delay < 0:
            raise DefinitionError(f"initial_delay must be >= 0, got {self.initial_delay}")
        if self.multiplier < 1:
            raise DefinitionError(f"multiplier must be >= 1, got {self.multiplier}")
        if self.max_delay < self.initial_delay:
            raise DefinitionError(
                f"max_delay ({self.max_delay}) must be >= initial_delay ({self.initial_delay})"
            )
        if not 0 <= self.jitter < 1:
            raise DefinitionError(f"jitter must be in [0, 1), got {self.jitter}")

    def backoff(self, attempt: int, seed: str) -> float:
        """Seconds to wait before `attempt` (>= 2); the jitter is a pure function of `seed`."""
        if attempt < 2:
            raise ValueError(
                f"backoff is the delay before a retry: attempt must be >= 2, got {attempt}"
            )
        try:
            nominal = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 2))
        except OverflowError:  # retried forever after a pivot: the exponent outgrew floats
            nominal = self.max_delay if self.initial_delay > 0 else 0.0
        if not self.jitter or not nominal:
            return nominal
        return nominal * (1.0 - self.jitter * _unit_interval(seed))

    def describe(self) -> dict[str, Any]:
        """The policy as plain JSON-able data."""
        return asdict(self)


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class Step:
    """One local transaction of a saga: a command to a participant and how to undo it."""

    name: str
    """Unique within the saga; keys the views, metrics and message ids."""
    participant: str
    """Who runs it: commands go to the `<participant>.commands` topic."""
    action: str
    """The command's `action`."""
    compensation: str | None = None
    """The action that undoes it, or None when there is nothing to undo."""
    timeout: float = 5.0
    """Seconds to wait for the reply to one attempt (command or compensation) before retrying."""
    retry: RetryPolicy = DEFAULT_RETRY
    """Attempts and backoff of the command; ignored after the pivot, where it is tried forever."""
    compensation_retry: RetryPolicy = DEFAULT_RETRY
    """Attempts and backoff of the compensation; past them the saga is `failed`."""
    pivot: bool = False
    """Once this step succeeds the saga can only go forward: nothing is compensated any more."""

    def __post_init__(self) -> None:
        check_name("step name", self.name)
        check_name(f"participant of step {self.name!r}", self.participant)
        if not self.action:
            raise DefinitionError(f"step {self.name!r} needs an action")
        if self.compensation is not None and not self.compensation:
            raise DefinitionError(
                f"step {self.name!r}: compensation must be an action name or None, not ''"
            )
        if not self.timeout > 0:
            raise DefinitionError(f"step {self.name!r}: timeout must be > 0, got {self.timeout}")

    def describe(self) -> dict[str, Any]:
        """The step as plain JSON-able data."""
        return {
            "name": self.name,
            "participant": self.participant,
            "action": self.action,
            "compensation": self.compensation,
            "timeout": self.timeout,
            "retry": self.retry.describe(),
            "compensation_retry": self.compensation_retry.describe(),
            "pivot": self.pivot,
        }


@dataclass(frozen=True, slots=True)
class SagaDefinition:
    """A saga type: its ordered steps and an optional deadline."""

    name: str
    """The saga type, as in `StartSaga.saga_type`."""
    version: int
    """Recorded in every saga's state; bump it when the steps change."""
    steps: tuple[Step, ...]
    """Run in this order; compensated in the reverse order."""
    deadline: float | None = None
    """Seconds after the start by which the pivot (or, without one, the last step) must have
    succeeded; past it the saga compensates. None: no deadline."""
    pivot_index: int | None = field(init=False, repr=False, compare=False)
    """Index of the pivot step, if any (derived)."""
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_name("saga name", self.name)
        if self.version < 1:
            raise DefinitionError(f"saga {self.name!r}: version must be >= 1, got {self.version}")
        if not self.steps:
            raise DefinitionError(f"saga {self.name!r} needs at least one step")
        if self.deadline is not None and not self.deadline > 0:
            raise DefinitionError(f"saga {self.name!r}: deadline must be > 0, got {self.deadline}")
        index: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            if step.name in index:
                raise DefinitionError(f"saga {self.name!r}: step name {step.name!r} is used twice")
            index[step.name] = i
        pivots = [i for i, step in enumerate(self.steps) if step.pivot]
        if len(pivots) > 1:
            names = ", ".join(repr(self.steps[i].name) for i in pivots)
            raise DefinitionError(f"saga {self.name!r} has more than one pivot: {names}")
        pivot = pivots[0] if pivots else None
        if pivot is not None:
            for step in self.steps[pivot + 1 :]:
                if step.compensation is not None:
                    raise DefinitionError(
                        f"saga {self.name!r}: step {step.name!r} comes after the pivot "
                        f"{self.steps[pivot].name!r}, so it is retried until it succeeds and never "
                        f"compensated; remove its compensation {step.compensation!r}"
                    )
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "pivot_index", pivot)
        object.__setattr__(self, "_index", index)

    def index_of(self, step_name: str) -> int | None:
        """Position of the step called `step_name`, or None if there is none."""
        return self._index.get(step_name)

    def step(self, step_name: str) -> Step:
        """The step called `step_name`; KeyError if there is none."""
        return self.steps[self._index[step_name]]

    def describe(self) -> dict[str, Any]:
        """The definition as plain JSON-able data (what `GET /definitions` lists)."""
        return {
            "name": self.name,
            "version": self.version,
            "kind": "orchestrated",
            "deadline": self.deadline,
            "pivot": None if self.pivot_index is None else self.steps[self.pivot_index].name,
            "steps": [step.describe() for step in self.steps],
        }
