"""The saga engine: one pure function from (definition, state, event, now) to a `Decision`.

Pure so that at-least-once delivery is safe: the orchestrator may apply an event, crash before
committing, and apply it again; the same inputs give the same new state, the same commands with
the same message ids and the same events. Nothing here reads a clock, draws a random number or
does I/O: `now` is the event's own timestamp, and backoff jitter is a hash of the message id.

Rules DESIGN.md leaves open, decided here:
- Only the reply to the attempt in flight counts (matched on step, kind and attempt). A reply
  already applied is a `duplicate_reply`; any other (an attempt that timed out, even before the
  next one is sent; another step) is a `stale_reply`. So a late success of a timed-out attempt is
  ignored: the next attempt asks again, and participants treat every attempt of a step as one
  operation.
- A step is *in doubt* when its latest attempt was sent and never answered: it timed out, or the
  saga was aborted or hit its deadline meanwhile. An in-doubt step is compensated (status
  `timed_out`); one whose latest attempt answered `failure` or `retry` did not happen and is not.
- After the pivot a step is retried until it succeeds: `failure` counts as `retry` and
  `max_attempts` is ignored. Aborts are then refused (`past_pivot`); the deadline stops applying.
- For a compensation, `failure` and `retry` both mean "try again"; its reply data is not merged.
- An operator retry continues the attempt count (message ids stay unique) with a fresh budget.
- A timeout that matches the current timer is honoured whatever its `due_at`: the sweeper decides
  when timers are due, and refusing an early one would lose the timer.
- A running saga whose definition version is not loaded is not guessed at: the first event for it
  fails it (`definition_missing`), keeping its timer and what it was doing; that event is not
  applied. An operator retry once the version is back resumes it and re-sends the attempt it
  waited for under the same message id, so the participant answers (again) from its dedupe store.
- Retention: a finished saga (`completed`, `compensated` or `failed`, suspended ones included) is
  deleted once its retention has passed since its last transition, judged by the retention
  timer's own timestamp; `failed` sagas too, so an operator has the retention to retry one. A
  retention timer needs no definition (`expire`, not `decide`), so sagas of a retired version go
  too. One for a saga that runs again, or finished again later, is stale; one for a saga that is
  already gone deletes again (a replay re-sends the tombstone, which may have died with the
  worker). Its history stays on `saga.events`; no event announces the deletion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from saga_app.definition import SagaDefinition
from saga_app.errors import DefinitionMismatch, InvalidEvent
from saga_app.state import (
    HistoryEntry,
    SagaState,
    SagaStatus,
    StepState,
    StepStatus,
    Suspension,
    Timer,
)
from topics import (
    AbortSaga,
    Command,
    MessageKind,
    ObservedEvent,
    Reply,
    RetrySaga,
    SagaEvent,
    SagaOutcome,
    SagaTimeout,
    StartSaga,
)

SagaInput = StartSaga | AbortSaga | RetrySaga | SagaTimeout | Reply
"""Everything the orchestrator feeds to `decide`."""

IgnoredReason = Literal[
    "duplicate_start",  # a start for a saga_id that already exists
    "duplicate_reply",  # a reply that was already applied
    "stale_reply",  # a reply to something the saga no longer waits for
    "stale_timeout",  # a timer the saga no longer waits for
    "unknown_saga",  # anything but a start for a saga_id with no state
    "not_running",  # an abort of a saga that is not in progress
    "past_pivot",  # an abort after the pivot succeeded: the saga can only go forward
    "not_failed",  # an operator retry of a saga that is not failed
    "definition_missing",  # the saga's definition version is not loaded on this worker
    "duplicate_event",  # a tracked saga's domain event that was applied already
    "unmatched_event",  # a domain event that means nothing to the saga's definition version
    "other_saga_type",  # a domain event for a saga id that is a saga of another type
]
"""Why an event changed nothing; the agent counts these and dead-letters `unknown_saga`."""


@dataclass(frozen=True, slots=True)
class OutgoingCommand:
    """A command or compensation to send to `participant` (the agent maps it to a topic)."""

    participant: str
    command: Command


@dataclass(frozen=True, slots=True)
class Decision:
    """What applying one event means: the state to store and the messages to send."""

    state: SagaState | None
    """The new state (the very object passed in when ignored); None only for an unknown saga."""
    commands: tuple[OutgoingCommand, ...] = ()
    events: tuple[SagaEvent, ...] = ()
    ignored: IgnoredReason | None = None
    """Set when the event changed nothing; then there is nothing to store or send."""
    delete: bool = False
    """The saga's retention has passed: delete it from the store. `state` is the saga as stored
    (None if it is gone already); nothing is sent."""
    announcements: tuple[SagaOutcome, ...] = ()
    """For a tracked saga: how it ended, for its services (`saga.outcomes`)."""


def decide(
    definition: SagaDefinition,
    state: SagaState | None,
    event: SagaInput,
    now: float,
    *,
    reply_to: str,
    queue_for: float = 0.0,
) -> Decision:
    """Apply `event`, timestamped `now`, to the saga `state` (None if there is no such saga yet).

    `queue_for` > 0 queues a new saga (`saga_app.admission`): its first command waits on a
    backoff timer that long, or until the orchestrator applies that timer sooner (`admission`).

    Never mutates `state`. Raises `InvalidEvent` for a start without saga_id and
    `DefinitionMismatch` when `definition` is not the saga's type and version.
    """
    if isinstance(event, StartSaga):
        return _start(definition, state, event, now, reply_to, queue_for)
    if state is None:
        return Decision(None, ignored="unknown_saga")
    if state.saga_type != definition.name or state.version != definition.version:
        raise DefinitionMismatch(
            f"saga {state.saga_id} is {state.saga_type} v{state.version}, "
            f"but was given definition {definition.name} v{definition.version}"
        )
    if isinstance(event, Reply):
        return _reply(definition, state, event, now, reply_to)
    if isinstance(event, SagaTimeout):
        if event.timer == "retention":
            raise InvalidEvent("a retention timer is applied with expire(), not decide()")
        return _timeout(definition, state, event, now, reply_to)
    if isinstance(event, AbortSaga):
        return _abort(definition, state, event, now, reply_to)
    if isinstance(event, RetrySaga):
        return _retry(definition, state, now, reply_to)
    raise InvalidEvent(f"decide cannot apply a {type(event).__name__}")


def _start(
    definition: SagaDefinition,
    state: SagaState | None,
    event: StartSaga,
    now: float,
    reply_to: str,
    queue_for: float,
) -> Decision:
    if state is not None:
        return Decision(state, ignored="duplicate_start")
    if event.saga_id is None:
        raise InvalidEvent("a start needs a saga_id: the agent assigns one before deciding")
    if event.saga_type != definition.name:
        raise DefinitionMismatch(
            f"start of a {event.saga_type} saga was given definition {definition.name}"
        )
    fresh = SagaState(
        saga_id=event.saga_id,
        saga_type=definition.name,
        version=definition.version,
        context=event.payload,
        created_at=now,
        updated_at=now,
        steps=[StepState(name=s.name, participant=s.participant) for s in definition.steps],
        deadline_at=None if definition.deadline is None else now + definition.deadline,
    )
    t = _Transition(definition, fresh, now, reply_to, copy=False)
    t.emit("saga_started")
    if queue_for > 0:
        first = definition.steps[0].name
        fresh.timer = Timer(
            timer="backoff", step=first, kind="command", attempt=1, due_at=now + queue_for
        )
        t.emit("saga_queued", first, 1)
    else:
        t.send(0, "command", 1)
    return t.finish()


def _reply(
    definition: SagaDefinition, state: SagaState, reply: Reply, now: float, reply_to: str
) -> Decision:
    key = f"{reply.step}:{reply.kind}:{reply.attempt}"
    if not state.awaits(reply.step, reply.kind, reply.attempt):
        reason: IgnoredReason = "duplicate_reply" if key in state.handled_replies else "stale_reply"
        return Decision(state, ignored=reason)
    t = _Transition(definition, state, now, reply_to)
    t.state.handled_replies = [*state.handled_replies, key]
    if reply.kind == "command":
        t.command_answered(state.cursor, reply)
    else:
        t.compensation_answered(state.cursor, reply)
    return t.finish()


def _timeout(
    definition: SagaDefinition, state: SagaState, timeout: SagaTimeout, now: float, reply_to: str
) -> Decision:
    if timeout.timer == "deadline":
        if state.status != SagaStatus.IN_PROGRESS or state.deadline_at is None:
            return Decision(state, ignored="stale_timeout")
        t = _Transition(definition, state, now, reply_to)
        t.compensate(f"deadline of {definition.deadline:g}s exceeded", event="deadline_exceeded")
        return t.finish()
    timer = state.active_timer
    if timer is None or not timer.matches(
        timeout.timer, timeout.step, timeout.kind, timeout.attempt
    ):
        return Decision(state, ignored="stale_timeout")
    t = _Transition(definition, state, now, reply_to)
    if timer.timer == "backoff":
        t.send(state.cursor, timer.kind, timer.attempt)
    else:
        t.attempt_timed_out(state.cursor, timer.kind, timer.attempt)
    return t.finish()


def _abort(
    definition: SagaDefinition, state: SagaState, abort: AbortSaga, now: float, reply_to: str
) -> Decision:
    if state.status != SagaStatus.IN_PROGRESS:
        return Decision(state, ignored="not_running")
    if definition.pivot_index is not None and state.cursor > definition.pivot_index:
        return Decision(state, ignored="past_pivot")
    t = _Transition(definition, state, now, reply_to)
    t.compensate(f"aborted: {abort.reason}", event="saga_aborted")
    return t.finish()


def _retry(definition: SagaDefinition, state: SagaState, now: float, reply_to: str) -> Decision:
    if state.status != SagaStatus.FAILED:
        return Decision(state, ignored="not_failed")
    t = _Transition(definition, state, now, reply_to)
    if state.suspended is not None:
        t.resume(state.suspended)
    else:
        t.redrive(state.cursor)
    return t.finish()


def admission(state: SagaState) -> SagaTimeout | None:
    """The timeout that sends a queued saga's first command when `decide` applies it: its own
    backoff timer, applied before it falls due once there is room. None unless it is queued."""
    if not state.queued:
        return None
    return next(t for t in state.timers() if t.timer == "backoff")


def expire(
    state: SagaState | None, timer: SagaTimeout, now: float, *, retention: float
) -> Decision:
    """Apply a retention `timer`, timestamped `now`: delete the saga if it finished at least
    `retention` seconds (0: never) before `now`. Never mutates `state`."""
    if timer.timer != "retention":
        raise InvalidEvent(f"expire() applies retention timers, not {timer.timer!r} timers")
    if state is None:
        return Decision(None, delete=True)
    expires_at = state.expires_at(retention)
    if expires_at is None or now < expires_at:
        return Decision(state, ignored="stale_timeout")
    return Decision(state, delete=True)


def definition_missing(
    state: SagaState, event: SagaInput | ObservedEvent, now: float, *, loaded: list[int]
) -> Decision:
    """Apply `event` to a saga whose definition version is not loaded (`loaded` are the ones that
    are): a running saga is failed with an error naming the missing version; anything else is
    ignored. Never mutates `state`."""
    if not state.running or isinstance(event, StartSaga):
        reason: IgnoredReason = (
            "duplicate_start" if isinstance(event, StartSaga) else "definition_missing"
        )
        return Decision(state, ignored=reason)
    versions = ", ".join(str(v) for v in loaded) or "none"
    error = (
        f"{state.saga_type} version {state.version} is not loaded on this worker "
        f"(loaded versions: {versions}); deploy version {state.version} and retry the saga"
    )
    failed = state.model_copy(
        update={
            "status": SagaStatus.FAILED,
            "error": error,
            "suspended": Suspension(status=state.status, error=state.error),
            "history": list(state.history),
            "updated_at": now,
        }
    )
    return Decision(failed, events=(record_transition(failed, "saga_failed", now, error=error),))


class WorkingCopy:
    """A working copy of one saga while one event is applied, and the transitions it records.

    Copy-on-write keeps `decide` and `track` cheap and pure: the state is copied shallowly once,
    its `steps` and `history` lists are new lists, a step is copied only when it changes, and
    `context` / `handled_replies` are replaced (never mutated). History entries and timers are
    frozen, so old and new states share them safely.
    """

    __slots__ = ("_original_steps", "events", "now", "state")

    def __init__(self, state: SagaState, now: float, *, copy: bool = True) -> None:
        self.now = now
        self.events: list[SagaEvent] = []
        if copy:
            self._original_steps: list[StepState] = state.steps
            self.state = state.model_copy(
                update={"steps": list(state.steps), "history": list(state.history)}
            )
        else:  # a state built for this transition: nobody else holds it
            self._original_steps = []
            self.state = state

    def step_state(self, index: int) -> StepState:
        """The step at `index`, copied first if it is still shared with the input state."""
        current = self.state.steps[index]
        if index < len(self._original_steps) and current is self._original_steps[index]:
            current = current.model_copy()
            self.state.steps[index] = current
        return current

    def emit(
        self,
        event: str,
        step: str | None = None,
        attempt: int | None = None,
        error: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Record a transition in the history and publish it as a saga event."""
        self.events.append(
            record_transition(self.state, event, self.now, step, attempt, error, detail=detail)
        )


class _Transition(WorkingCopy):
    """One orchestrated saga while one event is applied, and the commands it sends."""

    __slots__ = ("commands", "definition", "reply_to")

    def __init__(
        self,
        definition: SagaDefinition,
        state: SagaState,
        now: float,
        reply_to: str,
        *,
        copy: bool = True,
    ) -> None:
        super().__init__(state, now, copy=copy)
        self.definition = definition
        self.reply_to = reply_to
        self.commands: list[OutgoingCommand] = []

    def finish(self) -> Decision:
        self.state.updated_at = self.now
        return Decision(self.state, tuple(self.commands), tuple(self.events))

    # -- building blocks ----------------------------------------------------------------------

    def forward_only(self, index: int) -> bool:
        """Steps after the pivot only run once it succeeded; they are retried forever."""
        pivot = self.definition.pivot_index
        return pivot is not None and index > pivot

    def send(self, index: int, kind: MessageKind, attempt: int) -> None:
        """Send one attempt of the step's command or compensation and wait for its reply."""
        step = self.definition.steps[index]
        state = self.step_state(index)
        s = self.state
        s.cursor = index
        if kind == "command":
            state.status = StepStatus.RUNNING
            state.attempts = attempt
            state.in_doubt = True
            if state.started_at is None:
                state.started_at = self.now
        else:
            state.status = StepStatus.COMPENSATING
            state.compensation_attempts = attempt
        s.timer = Timer(
            timer="step", step=step.name, kind=kind, attempt=attempt, due_at=self.now + step.timeout
        )
        self.commands.append(_command(self.definition, s, index, kind, attempt, self.reply_to))
        self.emit(
            "step_started" if kind == "command" else "compensation_started", step.name, attempt
        )

    def send_after_backoff(self, index: int, kind: MessageKind, attempt: int) -> None:
        """Send `attempt` after its backoff: at once if that is 0, else when the timer fires."""
        step = self.definition.steps[index]
        if kind == "command":
            delay = step.retry.backoff(
                attempt, f"{self.state.saga_id}:{step.name}:{kind}:{attempt}"
            )
        else:
            nth = attempt - self.state.steps[index].redriven_at
            seed = f"{self.state.saga_id}:{step.name}:{kind}:{attempt}"
            delay = step.compensation_retry.backoff(nth, seed)
        if delay <= 0:
            self.send(index, kind, attempt)
        else:
            self.state.timer = Timer(
                timer="backoff", step=step.name, kind=kind, attempt=attempt, due_at=self.now + delay
            )

    # -- forward ------------------------------------------------------------------------------

    def command_answered(self, index: int, reply: Reply) -> None:
        step = self.definition.steps[index]
        state = self.step_state(index)
        state.in_doubt = False
        if reply.outcome == "success":
            self.step_succeeded(index, reply)
            return
        error = reply.error or f"participant answered {reply.outcome}"
        state.error = error
        if self.forward_only(index) or (
            reply.outcome == "retry" and state.attempts < step.retry.max_attempts
        ):
            self.emit("step_retrying", step.name, reply.attempt, error)
            self.send_after_backoff(index, "command", state.attempts + 1)
            return
        if reply.outcome == "retry":
            error = f"gave up after {state.attempts} attempts: {error}"
            state.error = error
        state.status = StepStatus.FAILED
        state.finished_at = self.now
        self.emit("step_failed", step.name, reply.attempt, error)
        self.compensate(f"step {step.name} failed: {error}")

    def step_succeeded(self, index: int, reply: Reply) -> None:
        step = self.definition.steps[index]
        state = self.step_state(index)
        state.status = StepStatus.SUCCEEDED
        state.finished_at = self.now
        state.error = None
        s = self.state
        if reply.data:
            s.context = {**s.context, **reply.data}
        if step.pivot:
            s.deadline_at = None
        self.emit("step_succeeded", step.name, reply.attempt)
        if index + 1 < len(self.definition.steps):
            self.send(index + 1, "command", 1)
        else:
            s.status = SagaStatus.COMPLETED
            s.timer = None
            self.emit("saga_completed")

    def attempt_timed_out(self, index: int, kind: MessageKind, attempt: int) -> None:
        step = self.definition.steps[index]
        state = self.step_state(index)
        error = f"no reply within {step.timeout:g}s"
        state.error = error
        if kind == "compensation":
            self.emit("compensation_timed_out", step.name, attempt, error)
            self.compensation_not_done(index, attempt, error, announce_retry=False)
            return
        self.emit("step_timed_out", step.name, attempt, error)
        if self.forward_only(index) or state.attempts < step.retry.max_attempts:
            self.send_after_backoff(index, "command", state.attempts + 1)
            return
        state.status = StepStatus.TIMED_OUT
        state.finished_at = self.now
        self.compensate(f"step {step.name} timed out after {state.attempts} attempts")

    # -- backward -----------------------------------------------------------------------------

    def compensate(self, cause: str, event: str | None = None) -> None:
        """Start rolling back: the step that was running is settled, then compensations run."""
        s = self.state
        s.status = SagaStatus.COMPENSATING
        s.error = cause
        s.timer = None
        if event is not None:
            self.emit(event, error=cause)
        index = s.cursor
        if s.steps[index].status == StepStatus.RUNNING:  # aborted or past the deadline
            state = self.step_state(index)
            state.finished_at = self.now
            if state.in_doubt:
                state.status = StepStatus.TIMED_OUT
                state.error = f"outcome unknown ({cause})"
            else:
                state.status = StepStatus.FAILED
                state.error = f"not retried ({cause})"
        self.compensate_next(index)

    def compensate_next(self, below_or_at: int) -> None:
        """Compensate the latest step that succeeded or is in doubt, or finish compensating."""
        steps = self.definition.steps
        for index in range(below_or_at, -1, -1):
            status = self.state.steps[index].status
            if steps[index].compensation is not None and (
                status == StepStatus.SUCCEEDED or status == StepStatus.TIMED_OUT
            ):
                self.send(index, "compensation", self.state.steps[index].compensation_attempts + 1)
                return
        self.state.status = SagaStatus.COMPENSATED
        self.state.timer = None
        self.emit("saga_compensated", error=self.state.error)

    def compensation_answered(self, index: int, reply: Reply) -> None:
        step = self.definition.steps[index]
        if reply.outcome == "success":
            state = self.step_state(index)
            state.status = StepStatus.COMPENSATED
            state.finished_at = self.now
            state.error = None
            self.emit("compensation_succeeded", step.name, reply.attempt)
            self.compensate_next(index - 1)
            return
        error = reply.error or f"participant answered {reply.outcome}"
        self.step_state(index).error = error
        self.compensation_not_done(index, reply.attempt, error, announce_retry=True)

    def compensation_not_done(
        self, index: int, attempt: int, error: str, *, announce_retry: bool
    ) -> None:
        """A compensation attempt failed: retry it, or give up and leave the saga `failed`."""
        step = self.definition.steps[index]
        state = self.state.steps[index]
        tried = state.compensation_attempts - state.redriven_at
        if tried < step.compensation_retry.max_attempts:
            if announce_retry:
                self.emit("compensation_retrying", step.name, attempt, error)
            self.send_after_backoff(index, "compensation", state.compensation_attempts + 1)
            return
        reason = (
            f"compensation {step.compensation} of step {step.name} "
            f"failed after {tried} attempts: {error}"
        )
        self.emit("compensation_failed", step.name, attempt, error)
        s = self.state
        s.status = SagaStatus.FAILED
        s.error = reason
        s.timer = None
        self.emit("saga_failed", step.name, error=reason)

    def redrive(self, index: int) -> None:
        """Operator retry of a failed saga: the stuck compensation gets a fresh retry budget."""
        state = self.step_state(index)
        state.redriven_at = state.compensation_attempts
        self.state.status = SagaStatus.COMPENSATING
        self.emit("saga_retried", self.definition.steps[index].name)
        self.send(index, "compensation", state.compensation_attempts + 1)

    def resume(self, suspended: Suspension) -> None:
        """Operator retry of a saga failed for a missing definition: carry on where it stopped.

        The attempt it waited for is sent again with its same message id (a participant that
        already answered answers again from its dedupe store); a pending backoff fires now.
        """
        s = self.state
        s.status = suspended.status
        s.error = suspended.error
        s.suspended = None
        self.emit("saga_retried")
        timer = s.timer
        if timer is not None:
            index = self.definition.index_of(timer.step)
            if index is None:
                raise InvalidEvent(
                    f"saga {s.saga_id} waited for step {timer.step!r}, which "
                    f"{s.saga_type} version {s.version} does not have"
                )
            self.send(index, timer.kind, timer.attempt)


def record_transition(
    state: SagaState,
    event: str,
    now: float,
    step: str | None = None,
    attempt: int | None = None,
    error: str | None = None,
    detail: str | None = None,
) -> SagaEvent:
    """Append a transition to `state`'s (own, already copied) history; the event to publish."""
    seq = state.last_seq + 1
    state.history.append(
        HistoryEntry(
            seq=seq, event=event, step=step, attempt=attempt, at=now, error=error, detail=detail
        )
    )
    return SagaEvent(
        saga_id=state.saga_id,
        saga_type=state.saga_type,
        seq=seq,
        event=event,
        step=step,
        attempt=attempt,
        status=state.status.value,
        at=now,
        error=error,
        detail=detail,
    )


def last_event(state: SagaState) -> SagaEvent | None:
    """The saga's latest transition exactly as it was published on `saga.events`.

    The orchestrator re-publishes it with the outstanding command when a replayed record turns
    out to be applied already: the state reached the changelog, but the worker may have died
    before the decision's events left. Consumers dedupe on (saga_id, seq)."""
    if not state.history:
        return None
    entry = state.history[-1]
    return SagaEvent(
        saga_id=state.saga_id,
        saga_type=state.saga_type,
        seq=entry.seq,
        event=entry.event,
        step=entry.step,
        attempt=entry.attempt,
        status=state.status.value,
        at=entry.at,
        error=entry.error,
        detail=entry.detail,
    )


def outstanding_command(
    definition: SagaDefinition, state: SagaState, *, reply_to: str
) -> OutgoingCommand | None:
    """The command or compensation the saga awaits an answer to, exactly as it was sent.

    The orchestrator re-sends it when a replayed record turns out to be applied already: the
    state was stored, but the command may have died in the producer's buffer with the worker.
    Participants dedupe on its message id, so a copy that did arrive costs nothing.
    """
    timer = state.active_timer
    if timer is None or timer.timer != "step":
        return None
    index = definition.index_of(timer.step)
    if index is None:
        return None
    return _command(definition, state, index, timer.kind, timer.attempt, reply_to)


def _command(
    definition: SagaDefinition,
    state: SagaState,
    index: int,
    kind: MessageKind,
    attempt: int,
    reply_to: str,
) -> OutgoingCommand:
    step = definition.steps[index]
    command = Command(
        message_id=f"{state.saga_id}:{step.name}:{kind}:{attempt}",
        saga_id=state.saga_id,
        saga_type=state.saga_type,
        step=step.name,
        kind=kind,
        action=step.action if kind == "command" else step.compensation or "",
        attempt=attempt,
        payload=state.context,
        reply_to=reply_to,
    )
    return OutgoingCommand(step.participant, command)
