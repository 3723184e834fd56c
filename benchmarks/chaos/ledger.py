"""The example participants, each keeping a ledger of every command its code saw.

Run them with `saga participant benchmarks.chaos.ledger:PARTICIPANTS --simulate` and
`CHAOS_LEDGER_DIR` set: each process start appends to its own file there,
`<start time ns>-<pid>.jsonl`, one JSON line per command or compensation that reached the
participant's code, written (and flushed to the kernel) before the runtime stores the answer and
sends the reply. A kill -9 of the process therefore never loses a line of an effect whose reply
went out; at worst it leaves a line for an effect whose reply never did, which is the truth too.
Files sort in start order, and lines within a file in handling order, so (file, line) orders
every line of a run.

What the participant's code sees is what the runtime did not answer from its dedupe store
(`saga_app/participant_app.py`): a redelivered command whose answer was stored is answered there
and never reaches the ledger. So a message_id that appears twice here got past the dedupe store.

What counts as an effect, and how the checker reads a line:

- `ran`: the handler ran. It did not when a `simulate` hook imposed the answer (`fail`, a
  `flaky` retry, a `fail_compensation` failure).
- `applied`: the handler ran and returned success. For an action this means the effect exists in
  the participant's database after the call: made now, or found made by an earlier attempt (the
  example handlers are idempotent per saga). A `timeout` hook silences the reply but the effect
  happened (`answer` is then `silent`). For a compensation it means the undo ran to success.
- `fresh`: `applied`, and the call changed the participant's records (`writes` lists what it
  changed; writing back a value already there is no change): this call changed the database.
  The same step's action (or compensation) applied fresh twice is an effect applied twice,
  whatever the message ids.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from participants import EXAMPLES
from saga_app.participant import Handler, Participant, Records, Result
from topics import Command

LEDGER_DIR_ENV = "CHAOS_LEDGER_DIR"


class Ledger:
    """An append-only JSON-lines file per process start, opened on the first line."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._file: IO[str] | None = None
        self._count = 0

    @classmethod
    def from_env(cls) -> Ledger:
        directory = os.environ.get(LEDGER_DIR_ENV)
        return cls(Path(directory) if directory else None)

    def write(self, entry: dict[str, Any]) -> None:
        """Append one line and flush it to the kernel: it survives a kill -9 of this process."""
        if self.directory is None:
            return
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{time.time_ns():020d}-{os.getpid()}.jsonl"
            self._file = path.open("a", encoding="utf-8")
        self._count += 1
        line = json.dumps({"n": self._count, **entry}, sort_keys=True)
        self._file.write(line + "\n")  # one write(2) per line: the buffer holds a whole line
        self._file.flush()


class _TrackedRecords(Records):
    """The participant's records, noting every write that changes one (a handler may write
    back what is already there, e.g. `metrics.cleanup`: that changes nothing)."""

    def __init__(self, inner: Records) -> None:  # no super().__init__: every call is delegated
        self._inner = inner
        self.writes: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self._inner.get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self._inner.get(key) != value:
            self.writes[key] = value
        self._inner.put(key, value)

    def values(self) -> Iterator[dict[str, Any]]:
        return self._inner.values()


class LedgerParticipant(Participant):
    """A participant with the same name, handlers and recovery hook, writing a ledger line for
    every command its code sees."""

    def __init__(self, inner: Participant, ledger: Ledger) -> None:
        super().__init__(inner.name, on_load=inner.on_load)
        self.ledger = ledger
        self._handler_result: Result | None = None
        for (kind, action), handler in inner.handlers.items():
            self.handlers[(kind, action)] = self._observed(handler)

    def _observed(self, handler: Handler) -> Handler:
        def run(command: Command, records: Records) -> Result:
            result = handler(command, records)
            self._handler_result = result
            return result

        return run

    def handle(
        self, command: Command, records: Records, *, simulate: bool = False
    ) -> Result | None:
        tracked = _TrackedRecords(records)
        self._handler_result = None
        entry: dict[str, Any] = {
            "ts": time.time(),
            "pid": os.getpid(),
            "saga_id": command.saga_id,
            "saga_type": command.saga_type,
            "participant": self.name,
            "step": command.step,
            "kind": command.kind,
            "action": command.action,
            "message_id": command.message_id,
            "attempt": command.attempt,
        }
        try:
            answer = super().handle(command, tracked, simulate=simulate)
        except Exception as e:  # the runtime dead-letters it; the ledger keeps what was written
            line = _outcome(None, self._handler_result, tracked)
            self.ledger.write({**entry, **line, "answer": "error", "error": repr(e)})
            raise
        self.ledger.write({**entry, **_outcome(answer, self._handler_result, tracked)})
        return answer


def _outcome(answer: Result | None, ran: Result | None, tracked: _TrackedRecords) -> dict[str, Any]:
    applied = ran is not None and ran.outcome == "success"
    return {
        "ran": ran is not None,
        "handler": None if ran is None else ran.outcome,
        "answer": "silent" if answer is None else answer.outcome,
        "applied": applied,
        "fresh": applied and bool(tracked.writes),
        "writes": tracked.writes,
    }


def with_ledger(participants: list[Participant], ledger: Ledger) -> list[Participant]:
    return [LedgerParticipant(p, ledger) for p in participants]


PARTICIPANTS = with_ledger(EXAMPLES, Ledger.from_env())
"""The example participants with one ledger for the process (`CHAOS_LEDGER_DIR`)."""


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class LedgerLine:
    """One line of a ledger, with its place in the run's order of lines."""

    order: int
    file: str
    saga_id: str
    participant: str
    step: str
    kind: str
    message_id: str
    attempt: int
    ran: bool
    applied: bool
    fresh: bool
    answer: str
    ts: float
    raw: dict[str, Any] = field(repr=False, compare=False)

    def brief(self) -> str:
        """One line for a report: order, what, attempt, and what happened."""
        what = "applied (fresh)" if self.fresh else "applied" if self.applied else "not applied"
        return (
            f"#{self.order} {self.participant}.{self.step} {self.kind} attempt {self.attempt} "
            f"answer={self.answer} {what} writes={self.raw.get('writes', {})} "
            f"file={self.file} ts={self.ts:.3f}"
        )


@dataclass
class LedgerReading:
    lines: list[LedgerLine]
    files: int
    unreadable: int
    """Lines that did not parse (none expected: a line is one write)."""


def read_ledgers(directory: Path) -> LedgerReading:
    """Every line of every ledger file in `directory`, in the run's order."""
    lines: list[LedgerLine] = []
    unreadable = 0
    paths = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
    for path in paths:
        for text in path.read_text(encoding="utf-8").splitlines():
            try:
                raw = json.loads(text)
                line = LedgerLine(
                    order=len(lines),
                    file=path.name,
                    saga_id=raw["saga_id"],
                    participant=raw["participant"],
                    step=raw["step"],
                    kind=raw["kind"],
                    message_id=raw["message_id"],
                    attempt=int(raw["attempt"]),
                    ran=bool(raw["ran"]),
                    applied=bool(raw["applied"]),
                    fresh=bool(raw["fresh"]),
                    answer=str(raw["answer"]),
                    ts=float(raw["ts"]),
                    raw=raw,
                )
            except (ValueError, KeyError, TypeError):
                unreadable += 1
                continue
            lines.append(line)
    return LedgerReading(lines, len(paths), unreadable)
