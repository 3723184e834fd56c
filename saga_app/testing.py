"""A test kit for saga definitions: scripts of given/expect, run on the real engine, no broker.

In the spirit of Eventuate Tram's saga unit tests, with time you skip instead of wait::

    (SagaTest(CREATE_ORDER)
        .start({"customer_id": "c1", "items": [], "amount": 10})
        .expect_command("create_order").reply_success(data={"order_id": "o1"})
        .expect_command("reserve_stock").reply_failure("out of stock")
        .expect_compensation("create_order").reply_success()
        .expect_status("compensated"))

Each reply answers the command taken by the latest `expect_command` / `expect_compensation`
(and `reply_success` / `reply_failure` / `reply_retry` fail the test if the engine ignores it).
`advance(seconds)` moves a fake clock and fires the timers that fall due through a
`DeadlineIndex`, exactly as the sweeper would, each at its own due time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self

from saga_app.definition import SagaDefinition
from saga_app.engine import Decision, OutgoingCommand, SagaInput, decide
from saga_app.state import SagaState, SagaStatus, StepStatus
from saga_app.sweeper import DeadlineIndex
from topics import AbortSaga, Command, MessageKind, Outcome, Reply, RetrySaga, SagaEvent, StartSaga


class SagaTest:
    """One saga driven step by step; every `expect_*` raises AssertionError saying what happened."""

    def __init__(
        self,
        definition: SagaDefinition,
        *,
        saga_id: str = "saga-1",
        start_time: float = 0.0,
        reply_to: str = "saga.replies",
    ) -> None:
        self.definition = definition
        self.saga_id = saga_id
        self.now = start_time
        self.reply_to = reply_to
        self.state: SagaState | None = None
        self.sent: list[OutgoingCommand] = []
        """Every command and compensation sent, in order."""
        self.events: list[SagaEvent] = []
        """Every saga event published, in order."""
        self.decisions: list[Decision] = []
        self.timers = DeadlineIndex()
        self._unread = 0  # index into `sent` of the first command no expect_* has taken
        self._answering: Command | None = None
        self._last_reply: Reply | None = None

    # -- given ---------------------------------------------------------------------------------

    def given(self, event: SagaInput) -> Self:
        """Deliver any event now, as the orchestrator agent would."""
        decision = decide(self.definition, self.state, event, self.now, reply_to=self.reply_to)
        self.decisions.append(decision)
        if decision.ignored is None and decision.state is not None:
            self.state = decision.state
            self.sent.extend(decision.commands)
            self.events.extend(decision.events)
            self.timers.track(self.saga_id, decision.state.wakeups())
        return self

    def start(self, payload: Mapping[str, Any] | None = None) -> Self:
        """Start the saga with `payload` as its context."""
        return self.given(
            StartSaga(
                saga_id=self.saga_id, saga_type=self.definition.name, payload=dict(payload or {})
            )
        )

    def reply(
        self,
        outcome: Outcome,
        *,
        data: Mapping[str, Any] | None = None,
        error: str | None = None,
        to: Command | None = None,
        strict: bool = False,
    ) -> Self:
        """Answer `to` (default: the command taken by the latest expect) with `outcome`.

        With `strict`, a reply the engine ignores (e.g. to an attempt that already timed out)
        fails the test at once instead of surfacing later as a puzzling expectation.
        """
        command = to or self._answering or (self.sent[-1].command if self.sent else None)
        if command is None:
            raise AssertionError("cannot reply: no command was sent yet")
        self._last_reply = command.reply(
            outcome, dict(data or {}), error, message_id=f"reply:{command.message_id}"
        )
        self.given(self._last_reply)
        ignored = self.decisions[-1].ignored
        if strict and ignored is not None:
            raise AssertionError(
                f"the {outcome} reply to {_show(command)} was ignored as {ignored!r}; "
                "use reply(..., to=command) to send such a reply on purpose" + self._story()
            )
        return self

    def reply_success(self, data: Mapping[str, Any] | None = None) -> Self:
        """The participant did it; `data` is merged into the saga context."""
        return self.reply("success", data=data, strict=True)

    def reply_failure(self, error: str = "failed") -> Self:
        """The participant refused for good (a business failure)."""
        return self.reply("failure", error=error, strict=True)

    def reply_retry(self, error: str = "try again") -> Self:
        """The participant could not do it now; ask again later."""
        return self.reply("retry", error=error, strict=True)

    def redeliver_last_reply(self) -> Self:
        """Deliver the previous reply again, as at-least-once delivery may."""
        if self._last_reply is None:
            raise AssertionError("cannot redeliver: no reply was sent yet")
        return self.given(self._last_reply)

    def abort(self, reason: str = "aborted by test") -> Self:
        """An operator aborts the saga."""
        return self.given(AbortSaga(saga_id=self.saga_id, reason=reason))

    def retry(self) -> Self:
        """An operator re-drives the (failed) saga."""
        return self.given(RetrySaga(saga_id=self.saga_id))

    def advance(self, seconds: float) -> Self:
        """Move the clock on; each timer falling due meanwhile fires at its due time, in order."""
        until = self.now + seconds
        while (due_at := self.timers.next_due()) is not None and due_at <= until:
            self.now = max(self.now, due_at)
            for timeout in self.timers.pop_due(self.now):
                self.given(timeout)
        self.now = until
        return self

    def advance_to_next_timer(self) -> Self:
        """Skip to the earliest timer and fire it (and any other due at the same instant)."""
        due_at = self.timers.next_due()
        if due_at is None:
            raise AssertionError("no timer is pending" + self._story())
        return self.advance(max(0.0, due_at - self.now))

    # -- expect --------------------------------------------------------------------------------

    def expect_command(
        self,
        step: str,
        *,
        attempt: int | None = None,
        action: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> Self:
        """The next unread message sent is `step`'s command (optionally: this attempt, action,
        and a payload containing these items); later replies answer it."""
        return self._expect_next("command", step, attempt, action, payload)

    def expect_compensation(
        self, step: str, *, attempt: int | None = None, action: str | None = None
    ) -> Self:
        """The next unread message sent is `step`'s compensation; later replies answer it."""
        return self._expect_next("compensation", step, attempt, action, None)

    def expect_no_command(self) -> Self:
        """Nothing was sent that no expect_* has taken yet."""
        unread = self.sent[self._unread :]
        if unread:
            raise AssertionError(
                f"expected no command, but {len(unread)} unread: "
                + ", ".join(_show(c.command) for c in unread)
                + self._story()
            )
        return self

    def expect_status(self, status: SagaStatus | str) -> Self:
        """The saga is in `status`."""
        state = self._state()
        if state.status != status:
            raise AssertionError(
                f"expected saga status {SagaStatus(status).value!r}, "
                f"got {state.status.value!r}" + self._story()
            )
        return self

    def expect_step(
        self,
        step: str,
        status: StepStatus | str,
        *,
        attempts: int | None = None,
        compensation_attempts: int | None = None,
    ) -> Self:
        """Step `step` is in `status` (and made these many attempts, if given)."""
        state = self._state().step(step)
        wanted: dict[str, object] = {"status": StepStatus(status)}
        if attempts is not None:
            wanted["attempts"] = attempts
        if compensation_attempts is not None:
            wanted["compensation_attempts"] = compensation_attempts
        got = {name: getattr(state, name) for name in wanted}
        if got != wanted:
            raise AssertionError(f"step {step!r}: expected {wanted}, got {got}" + self._story())
        return self

    def expect_context(self, **items: Any) -> Self:
        """The saga context holds these items."""
        context = self._state().context
        wrong = {k: context.get(k, "<missing>") for k, v in items.items() if context.get(k) != v}
        if wrong:
            raise AssertionError(f"expected context items {items}, but found {wrong}")
        return self

    def expect_event(self, event: str, *, step: str | None = None) -> Self:
        """The saga published `event` (for `step`, if given) at some point."""
        if not any(e.event == event and (step is None or e.step == step) for e in self.events):
            where = f" for step {step!r}" if step else ""
            raise AssertionError(f"expected event {event!r}{where}" + self._story())
        return self

    def expect_ignored(self, reason: str) -> Self:
        """The latest event delivered was ignored for `reason`."""
        got = self.decisions[-1].ignored if self.decisions else None
        if got != reason:
            raise AssertionError(f"expected the last event ignored as {reason!r}, got {got!r}")
        return self

    def expect_error(self, contains: str) -> Self:
        """The saga's error mentions `contains`."""
        error = self._state().error
        if error is None or contains not in error:
            raise AssertionError(f"expected the saga error to contain {contains!r}, got {error!r}")
        return self

    def expect_compensations_in_order(self, steps: Sequence[str]) -> Self:
        """The compensations sent so far (retries counted once) were for exactly these steps."""
        sent = compensated_steps(c.command for c in self.sent)
        if sent != list(steps):
            raise AssertionError(
                f"expected compensations in order {list(steps)}, but sent {sent}" + self._story()
            )
        return self

    # -- helpers -------------------------------------------------------------------------------

    @property
    def last_command(self) -> Command:
        """The command taken by the latest expect_command / expect_compensation."""
        if self._answering is None:
            raise AssertionError("no command was taken by an expect_* yet")
        return self._answering

    def _expect_next(
        self,
        kind: MessageKind,
        step: str,
        attempt: int | None,
        action: str | None,
        payload: Mapping[str, Any] | None,
    ) -> Self:
        what = f"{kind} of step {step!r}" + (f" attempt {attempt}" if attempt else "")
        if self._unread >= len(self.sent):
            raise AssertionError(f"expected {what}, but nothing more was sent" + self._story())
        command = self.sent[self._unread].command
        problems = []
        if (command.kind, command.step) != (kind, step):
            problems.append(f"the next message was {_show(command)}")
        if attempt is not None and command.attempt != attempt:
            problems.append(f"attempt was {command.attempt}")
        if action is not None and command.action != action:
            problems.append(f"action was {command.action!r}, expected {action!r}")
        for key, value in (payload or {}).items():
            if command.payload.get(key) != value:
                problems.append(f"payload[{key!r}] was {command.payload.get(key, '<missing>')!r}")
        if problems:
            raise AssertionError(f"expected {what}, but " + "; ".join(problems) + self._story())
        self._unread += 1
        self._answering = command
        return self

    def _state(self) -> SagaState:
        if self.state is None:
            raise AssertionError("the saga was not started")
        return self.state

    def _story(self) -> str:
        if self.state is None:
            return "\n(no saga yet)"
        lines = [f"\nsaga {self.saga_id} is {self.state.status.value} at t={self.now:g}; history:"]
        for entry in self.state.history[-12:]:
            where = f" {entry.step}#{entry.attempt}" if entry.step else ""
            error = f" ({entry.error})" if entry.error else ""
            lines.append(f"  {entry.seq:>3} t={entry.at:g} {entry.event}{where}{error}")
        ignored = [d.ignored for d in self.decisions[-5:] if d.ignored]
        if ignored:
            lines.append(f"recently ignored: {ignored}")
        return "\n".join(lines)


def compensated_steps(commands: Iterable[Command]) -> list[str]:
    """Steps whose compensation was sent, in order, each retry run collapsed to one entry."""
    steps: list[str] = []
    for command in commands:
        if command.kind == "compensation" and (not steps or steps[-1] != command.step):
            steps.append(command.step)
    return steps


def _show(command: Command) -> str:
    return (
        f"{command.kind} of step {command.step!r} "
        f"(action {command.action!r}, attempt {command.attempt})"
    )
