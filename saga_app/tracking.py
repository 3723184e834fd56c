"""The tracker: one pure function from (tracked definition, state, event, now) to a `Decision`.

A choreographed saga is followed, not driven: its services react to each other's events, and
the tracker only correlates those events by saga id into the same durable state an orchestrated
saga has, so it shows in the same views and metrics, and its deadlines are the same durable
timers. It sends no commands; what it publishes besides `saga.events` is an announcement on
`saga.outcomes` (`SagaOutcome`) that the services compensate on. Pure for the reason `decide` is:
applying an event twice gives the same state and the same messages.

Rules, decided here:
- The first event that marks a step, or the definition's `started` event, begins the saga, and
  its deadline counts from then. A compensation event for a saga that does not exist names an
  unknown saga (the orchestrator dead-letters it).
- A step is done when its done event arrives, whatever order the steps' events come in. An
  event already applied changes nothing (`duplicate_event`): delivery is at least once.
- A failure event, an operator abort or the deadline rolls the saga back: the tracker announces
  `saga.failed` (or `saga.timeout`) with the steps done, then waits up to the definition's
  `compensation_deadline` for the compensation event of each done step that declares one; past
  it the saga is `failed`, and an operator retry announces again. A compensation event that
  arrives after that still counts: the saga ends `compensated` with the last one.
- Steps whose event never came are not waited for: the tracker cannot know whether their
  service acted. The announcement reaches every service, and one that acted undoes it.
- A step done while the saga rolls back (its service acted late) is waited for too, and the
  failure is announced again, naming it.
- An event after the saga ended, or one it does not wait for (a compensation before any
  failure), is recorded in the history once, and not applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saga_app.engine import Decision, IgnoredReason, WorkingCopy
from saga_app.errors import DefinitionMismatch, InvalidEvent
from saga_app.state import FINAL_STATUSES, SagaState, SagaStatus, StepState, StepStatus, Timer
from saga_app.tracked import Role, TrackedSagaDefinition
from topics import (
    AbortSaga,
    ObservedEvent,
    OutcomeType,
    RetrySaga,
    SagaOutcome,
    SagaTimeout,
    StartSaga,
)

TrackerInput = StartSaga | AbortSaga | RetrySaga | SagaTimeout | ObservedEvent
"""Everything the orchestrator feeds to `track`."""

_DONE = frozenset({StepStatus.SUCCEEDED, StepStatus.COMPENSATING, StepStatus.COMPENSATED})
"""The statuses of a step whose done event arrived."""

_APPLIED: dict[Role, frozenset[StepStatus]] = {
    "done": _DONE,
    "failed": frozenset({StepStatus.FAILED}),
    "compensated": frozenset({StepStatus.COMPENSATED}),
    "started": frozenset(StepStatus),
}
"""The statuses of a step in which an event of each role is a duplicate."""


def track(
    definition: TrackedSagaDefinition, state: SagaState | None, event: TrackerInput, now: float
) -> Decision:
    """Apply `event`, timestamped `now`, to the tracked saga `state` (None if there is none yet).

    Never mutates `state`. Raises `InvalidEvent` for a start request (a tracked saga begins
    with its first event) and `DefinitionMismatch` when `definition` is not the saga's.
    """
    if isinstance(event, StartSaga):
        raise InvalidEvent(
            f"{definition.name} is a tracked saga: it begins with its first domain event, "
            "not with a start request"
        )
    if isinstance(event, ObservedEvent):
        return _observed(definition, state, event, now)
    if state is None:
        return Decision(None, ignored="unknown_saga")
    _check(definition, state)
    if isinstance(event, SagaTimeout):
        return _timeout(definition, state, event, now)
    if isinstance(event, AbortSaga):
        if state.status != SagaStatus.IN_PROGRESS:
            return Decision(state, ignored="not_running")
        t = _Tracking(definition, state, now)
        t.roll_back(f"aborted: {event.reason}", event="saga_aborted")
        return t.finish()
    if state.status != SagaStatus.FAILED:
        return Decision(state, ignored="not_failed")
    t = _Tracking(definition, state, now)
    t.retry()
    return t.finish()


def announcement(state: SagaState) -> SagaOutcome | None:
    """What the tracker has announced about this saga, as it announced it (None while it is
    in progress). The orchestrator announces it again when a replayed record turns out to be
    applied already: the worker may have died before the announcement left."""
    if state.mode != "tracked" or state.status == SagaStatus.IN_PROGRESS:
        return None
    kind: OutcomeType = "saga.completed"
    if state.status != SagaStatus.COMPLETED:
        timed_out = any(entry.event == "deadline_exceeded" for entry in state.history)
        kind = "saga.timeout" if timed_out else "saga.failed"
    return SagaOutcome(
        type=kind,
        saga_id=state.saga_id,
        saga_type=state.saga_type,
        steps_done=[step.name for step in state.steps if step.status in _DONE],
        compensations=[s.name for s in state.steps if s.status == StepStatus.COMPENSATING],
        error=state.error,
        attempt=_announcements(state),
        at=state.updated_at,
    )


def _announcements(state: SagaState) -> int:
    """How often the roll-back was announced: once, and again at each operator retry."""
    return 1 + sum(entry.event == "saga_retried" for entry in state.history)


def _check(definition: TrackedSagaDefinition, state: SagaState) -> None:
    if state.saga_type != definition.name or state.version != definition.version:
        raise DefinitionMismatch(
            f"saga {state.saga_id} is {state.saga_type} v{state.version}, "
            f"but was given definition {definition.name} v{definition.version}"
        )


def _observed(
    definition: TrackedSagaDefinition, state: SagaState | None, event: ObservedEvent, now: float
) -> Decision:
    if state is not None and (state.mode != "tracked" or state.saga_type != definition.name):
        return Decision(state, ignored="other_saga_type")
    if state is not None:
        _check(definition, state)
    matches = definition.match(event.topic, event.event)
    if not matches:
        return Decision(state, ignored="unmatched_event")
    detail = f"{event.event.get(definition.type_field, 'event')} on {event.topic}"
    if state is None:
        if all(role == "compensated" for _, role in matches):
            return Decision(None, ignored="unknown_saga")
        t = _Tracking(definition, _begin(definition, event.saga_id, now), now, copy=False)
        t.context(event.event)
        t.emit("saga_started", detail=detail)
    else:
        t = _Tracking(definition, state, now)
    for step, role in matches:
        if step is not None:
            t.observe(step, role, event.event, detail)
    if not t.events:
        reason: IgnoredReason = "duplicate_event"
        return Decision(state, ignored=reason)
    return t.finish()


def _begin(definition: TrackedSagaDefinition, saga_id: str, now: float) -> SagaState:
    return SagaState(
        saga_id=saga_id,
        saga_type=definition.name,
        version=definition.version,
        mode="tracked",
        created_at=now,
        updated_at=now,
        steps=[StepState(name=s.name, participant=s.service) for s in definition.steps],
        deadline_at=now + definition.deadline,
    )


def _timeout(
    definition: TrackedSagaDefinition, state: SagaState, timeout: SagaTimeout, now: float
) -> Decision:
    if timeout.timer == "deadline":
        if state.status != SagaStatus.IN_PROGRESS:
            return Decision(state, ignored="stale_timeout")
        t = _Tracking(definition, state, now)
        missing = [s.name for s in state.steps if s.status not in _DONE]
        cause = f"deadline of {definition.deadline:g}s passed without {', '.join(missing)}"
        t.roll_back(cause, event="deadline_exceeded")
        return t.finish()
    timer = state.active_timer
    if timer is None or not timer.matches(
        timeout.timer, timeout.step, timeout.kind, timeout.attempt
    ):
        return Decision(state, ignored="stale_timeout")
    t = _Tracking(definition, state, now)
    t.compensations_overdue()
    return t.finish()


def _reason(event: Mapping[str, Any]) -> str | None:
    """Why a service says its step failed, if its event says."""
    for name in ("error", "reason", "message"):
        value = event.get(name)
        if isinstance(value, str) and value:
            return value
    return None


class _Tracking(WorkingCopy):
    """One tracked saga while one event is applied, and whether to announce how it went."""

    __slots__ = ("announce", "definition")

    def __init__(
        self, definition: TrackedSagaDefinition, state: SagaState, now: float, *, copy: bool = True
    ) -> None:
        super().__init__(state, now, copy=copy)
        self.definition = definition
        self.announce = False

    def finish(self) -> Decision:
        self.state.updated_at = self.now
        outcome = announcement(self.state) if self.announce else None
        return Decision(
            self.state, events=tuple(self.events), announcements=(outcome,) if outcome else ()
        )

    def note(self, event: str, step: str, detail: str, error: str) -> None:
        """Record an event that is not applied, once however often it comes."""
        for entry in self.state.history:
            if entry.event == event and entry.step == step and entry.detail == detail:
                return
        self.emit(event, step, error=error, detail=detail)

    def context(self, event: Mapping[str, Any]) -> None:
        """What the services said, for the views: the fields of the events applied."""
        fields = {k: v for k, v in event.items() if k != self.definition.type_field}
        self.state.context = {**self.state.context, **fields}

    # -- one event ----------------------------------------------------------------------------

    def observe(self, step: str, role: Role, event: Mapping[str, Any], detail: str) -> None:
        index = self.definition.index_of(step)
        assert index is not None  # `match` names only the definition's steps
        if self.state.steps[index].status in _APPLIED[role]:
            return  # a duplicate, however late
        status = self.state.status
        ended = status in FINAL_STATUSES or (status == SagaStatus.FAILED and role != "compensated")
        if ended:
            self.note("event_after_end", step, detail, f"the saga had ended ({status.value})")
        elif role == "done":
            self.done(index, event, detail)
        elif role == "failed":
            self.failed(index, event, detail)
        elif role == "compensated":
            self.compensated(index, detail)

    def done(self, index: int, event: Mapping[str, Any], detail: str) -> None:
        step = self.step_state(index)
        step.status, step.finished_at, step.error, step.attempts = (
            StepStatus.SUCCEEDED,
            self.now,
            None,
            1,
        )
        self.context(event)
        s = self.state
        if s.status == SagaStatus.COMPENSATING:
            late = "done after the saga began rolling back"
            if self.definition.steps[index].compensated is not None:
                step.status = StepStatus.COMPENSATING
                late += ": its compensation is awaited too"
                self.announce = True
            self.emit("step_succeeded", step.name, error=late, detail=detail)
            return
        self.emit("step_succeeded", step.name, detail=detail)
        missing = [i for i, st in enumerate(s.steps) if st.status not in _DONE]
        if missing:
            s.cursor = missing[0]
            return
        s.status, s.timer, s.deadline_at = SagaStatus.COMPLETED, None, None
        self.emit("saga_completed")
        self.announce = True

    def failed(self, index: int, event: Mapping[str, Any], detail: str) -> None:
        current = self.state.steps[index]
        name = current.name
        reason = _reason(event) or detail
        if current.status in _DONE:
            self.note("event_not_applied", name, detail, f"{name} was done already: {reason}")
            return
        step = self.step_state(index)
        step.status, step.finished_at, step.error = StepStatus.FAILED, self.now, reason
        self.emit("step_failed", name, error=reason, detail=detail)
        if self.state.status == SagaStatus.IN_PROGRESS:
            self.state.cursor = index
            self.roll_back(f"step {name} failed: {reason}")

    def compensated(self, index: int, detail: str) -> None:
        current = self.state.steps[index]
        if current.status != StepStatus.COMPENSATING:
            self.note("event_not_awaited", current.name, detail, "no compensation was awaited")
            return
        step = self.step_state(index)
        step.status, step.finished_at, step.error = StepStatus.COMPENSATED, self.now, None
        self.emit("compensation_succeeded", step.name, detail=detail)
        s = self.state
        if s.status == SagaStatus.FAILED:  # late, but it counts
            if any(st.status == StepStatus.COMPENSATING for st in s.steps):
                return  # still failed: the rest were not undone in time
            s.status = SagaStatus.COMPENSATING
        self.await_compensations(_announcements(s))

    # -- rolling back -------------------------------------------------------------------------

    def roll_back(self, cause: str, event: str | None = None) -> None:
        """Announce the failure and wait for the compensations of the steps done so far."""
        s = self.state
        s.status, s.error = SagaStatus.COMPENSATING, cause
        if event is not None:
            self.emit(event, error=cause)
        for i, step in enumerate(self.definition.steps):
            if s.steps[i].status == StepStatus.SUCCEEDED and step.compensated is not None:
                self.step_state(i).status = StepStatus.COMPENSATING
        self.announce = True
        self.await_compensations(1)

    def await_compensations(self, attempt: int) -> None:
        """Wait for the compensations still due, or end compensated if none is."""
        s = self.state
        awaited = [i for i, st in enumerate(s.steps) if st.status == StepStatus.COMPENSATING]
        if not awaited:
            s.status, s.timer = SagaStatus.COMPENSATED, None
            self.emit("saga_compensated", error=s.error)
            return
        if s.timer is not None:
            return  # the compensation deadline runs already
        s.cursor = awaited[-1]
        s.timer = Timer(
            timer="step",
            step=s.steps[awaited[-1]].name,
            kind="compensation",
            attempt=attempt,
            due_at=self.now + self.definition.compensation_deadline,
        )

    def compensations_overdue(self) -> None:
        s = self.state
        missing = [(i, st) for i, st in enumerate(s.steps) if st.status == StepStatus.COMPENSATING]
        waited = f"{self.definition.compensation_deadline:g}s"
        for i, st in missing:
            pattern = self.definition.steps[i].compensated
            self.emit("compensation_timed_out", st.name, error=f"no {pattern} within {waited}")
        services = ", ".join(st.participant for _, st in missing)
        s.status, s.timer = SagaStatus.FAILED, None
        s.error = f"no compensation event from {services} within {waited}"
        self.emit("saga_failed", error=s.error)

    def retry(self) -> None:
        """Operator retry of a failed saga: announce the failure again and wait for it again;
        or, failed because its definition version was not loaded, carry on where it was."""
        s = self.state
        if s.suspended is not None:
            s.status, s.error, s.suspended = s.suspended.status, s.suspended.error, None
            self.emit("saga_retried")
            return
        s.status = SagaStatus.COMPENSATING
        self.emit("saga_retried")
        self.announce = True
        self.await_compensations(_announcements(s))
