"""The participant API: a service declares a handler per action and per compensation.

    payments = Participant("payments")

    @payments.action("charge")
    def charge(command: Command, records: Records) -> Result:
        ...
        return success(payment_id=command.saga_id)

`saga participant mypkg.payments:payments` runs it (`saga_app.participant_app`). The runtime
gives each command exactly-once *effect* on top of at-least-once delivery:

- a command whose message_id was already answered gets the stored reply again, with no second
  effect (Kafka redelivery, an orchestrator replay);
- a new attempt of the same step has a new message_id, so handlers themselves are idempotent per
  saga (a reservation is keyed by saga_id): attempt 2 after a lost reply to attempt 1 finds the
  effect already done and reports success.

The `simulate` hooks of DESIGN.md live here, so every participant supports them the same way,
and only when the process runs with them on (`saga participant --simulate`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from topics import Command, Outcome, Reply


@dataclass(frozen=True)
class Result:
    """What a handler decided; the runtime turns it into a `Reply`."""

    outcome: Outcome
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def success(**data: Any) -> Result:
    return Result("success", data)


def failure(error: str) -> Result:
    """A business failure: the orchestrator compensates instead of retrying."""
    return Result("failure", error=error)


def retry(error: str) -> Result:
    """A transient failure: the orchestrator sends the command again after a backoff."""
    return Result("retry", error=error)


class Records:
    """A participant's own database: JSON-able records by key, over a Faust table of bytes.

    Keys are saga-scoped (e.g. `reservation:<saga_id>`), so every write lands on the partition of
    the saga whose command is being handled, and a replayed changelog restores it exactly.
    """

    def __init__(self, table: MutableMapping[bytes, bytes], prefix: str) -> None:
        self._table = table
        self._prefix = prefix

    def _key(self, key: str) -> bytes:
        return f"{self._prefix}:{key}".encode()

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self._table.get(self._key(key))
        return None if raw is None else dict(json.loads(raw))

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._table[self._key(key)] = json.dumps(value, sort_keys=True).encode()

    def values(self) -> Iterator[dict[str, Any]]:
        """Every record of this participant in the local store (for rebuilding aggregates)."""
        start = f"{self._prefix}:".encode()
        for key, raw in list(self._table.items()):
            if bytes(key).startswith(start):
                yield dict(json.loads(raw))


Handler = Callable[[Command, Records], Result]


class Participant:
    """A named service: the handlers for its actions and compensations, and its records."""

    def __init__(self, name: str, on_load: Callable[[Records], None] | None = None) -> None:
        self.name = name
        self.handlers: dict[tuple[str, str], Handler] = {}
        self.on_load = on_load
        """Called once with the records after state recovery, to rebuild in-memory aggregates."""

    def action(self, action: str) -> Callable[[Handler], Handler]:
        return self._register("command", action)

    def compensation(self, action: str) -> Callable[[Handler], Handler]:
        return self._register("compensation", action)

    def _register(self, kind: str, action: str) -> Callable[[Handler], Handler]:
        def decorator(fun: Handler) -> Handler:
            self.handlers[(kind, action)] = fun
            return fun

        return decorator

    def handle(
        self, command: Command, records: Records, *, simulate: bool = False
    ) -> Result | None:
        """Run the command's handler (honouring `simulate` hooks if on); None: do not answer."""
        hook = _simulation(command) if simulate else ""
        imposed = _imposed_answer(hook, command)
        if imposed is not None:
            return imposed
        handler = self.handlers.get((command.kind, command.action))
        if handler is None:
            return failure(f"{self.name} has no {command.kind} handler for {command.action!r}")
        result = handler(command, records)
        if hook == "timeout" and command.kind == "command":
            return None  # the effect happened, the answer is lost: the step is in doubt
        return result


def reply_to(command: Command, result: Result) -> Reply:
    """The reply for a command; its id derives from the command's, so a re-send is identical."""
    return command.reply(result.outcome, result.data, result.error)


def _simulation(command: Command) -> str:
    simulate = command.payload.get("simulate")
    if not isinstance(simulate, dict):
        return ""
    hook = simulate.get(command.step, "")
    return hook if isinstance(hook, str) else ""


def _imposed_answer(hook: str, command: Command) -> Result | None:
    """The answer a `simulate` hook gives instead of running the handler, if any."""
    if command.kind == "command":
        if hook == "fail":
            return failure(f"simulated failure of {command.step}")
        if hook.startswith("flaky:") and command.attempt <= _count(hook):
            return retry(f"simulated transient failure {command.attempt} of {command.step}")
    elif hook.startswith("fail_compensation:") and command.attempt <= _count(hook):
        return failure(f"simulated compensation failure {command.attempt} of {command.step}")
    return None


def _count(hook: str) -> int:
    try:
        return int(hook.split(":", 1)[1])
    except ValueError:
        return 0
