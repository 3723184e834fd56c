"""The chaos checker: each saga's final status against the participants' ledgers, and the figures.

Pure functions over what the run collected, so they are unit-tested without a broker
(`tests/unit/test_chaos_check.py`). The rules, per saga (a *line* is a ledger line, see
`ledger.py` for `applied` and `fresh`; "before" is the ledger's order across the run):

- Always: no compensation line for a step without a command line for that step before it (a
  refund for a charge never commanded); the compensation of a lower step is never delivered
  before the compensation of every higher compensated step was applied (reverse order, one at a
  time); no step's action or compensation applied fresh twice (an effect applied twice); no
  action applied fresh after its own compensation (an effect left in place after the undo).
- `completed`: every step's action applied, and no compensation line at all.
- `compensated`: every step with a compensation whose action applied was compensated (applied);
  nothing at or after the pivot: no command line for a step after it, and the pivot never
  succeeded in the saga's history. The pivot itself may have taken effect when its outcome was in
  doubt (it timed out); then it must have been refunded like any other step.
- `failed` (a compensation ran out of attempts): only the rules that always apply.
- And `saga.events` never announces two different final statuses for one saga (say
  `completed`, then `compensated` after a state regressed on a takeover): whoever acted on the
  first was misled, even when the ledgers agree with the last.

A saga whose web view is not terminal by the deadline is *lost*, whatever its ledger says.
"""

from __future__ import annotations

import bisect
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.chaos.ledger import LedgerLine
from benchmarks.chaos.plan import PlannedSaga

TERMINAL = frozenset({"completed", "compensated", "failed"})
ROLLED_BACK = frozenset({"compensated", "failed"})


@dataclass(frozen=True)
class EventRecord:
    """One record of `saga.events` as read from Kafka."""

    partition: int
    offset: int
    timestamp: float
    """The record's timestamp (seconds): when the worker produced it."""
    value: dict[str, Any]

    def brief(self) -> str:
        v = self.value
        step = f" {v.get('step')}#{v.get('attempt')}" if v.get("step") else ""
        error = f" error={v['error']!r}" if v.get("error") else ""
        return (
            f"p{self.partition}@{self.offset} ts={self.timestamp:.3f} seq={v.get('seq')} "
            f"{v.get('event')}{step} -> {v.get('status')}{error}"
        )


@dataclass
class SagaObservation:
    """Everything the run knows about one saga."""

    planned: PlannedSaga
    started_at: float | None = None
    """Wall time the start request was first sent."""
    view: dict[str, Any] | None = None
    """`GET /sagas/{id}` at the end (None: 404 or no answer)."""
    ledger: list[LedgerLine] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)


@dataclass
class Verdict:
    saga_id: str
    saga_type: str
    scenario: str
    expected: str
    status: str
    """The web view's status, `missing` when it had none."""
    problems: list[str]
    handler_reruns: int
    duplicate_effects: int
    extra_command_attempts: int
    extra_compensation_attempts: int
    latency: float | None
    events_status: str | None
    """The first terminal status on `saga.events`, if any."""
    terminal_statuses_in_events: list[str]

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def inconsistent(self) -> bool:
        return bool(self.problems)

    @property
    def spurious_rollback(self) -> bool:
        return self.status in ROLLED_BACK and self.expected == "completed"

    @property
    def missed_rollback(self) -> bool:
        return self.status == "completed" and self.expected != "completed"

    @property
    def view_disagrees_with_events(self) -> bool:
        """The table's final status is not the one `saga.events` announced (none, or two)."""
        statuses = set(self.terminal_statuses_in_events)
        return len(statuses) > 1 or (self.terminal and self.status not in statuses)


def check_saga(obs: SagaObservation) -> Verdict:
    """Apply the rules of this module's docstring to one saga."""
    planned = obs.planned
    definition = planned.definition
    steps = definition.steps
    status = str(obs.view.get("status")) if obs.view else "missing"
    problems: list[str] = []
    commands: dict[int, list[LedgerLine]] = defaultdict(list)
    compensations: dict[int, list[LedgerLine]] = defaultdict(list)
    for line in obs.ledger:
        index = definition.index_of(line.step)
        if index is None:
            problems.append(f"ledger line for unknown step {line.step!r}: {line.brief()}")
            continue
        (commands if line.kind == "command" else compensations)[index].append(line)

    # An effect applied twice, and a command message that reached the handler again.
    duplicate_effects = 0
    for kind, lines_by_step in (("action", commands), ("compensation", compensations)):
        for index, lines in sorted(lines_by_step.items()):
            fresh = [line for line in lines if line.fresh]
            if len(fresh) > 1:
                duplicate_effects += len(fresh) - 1
                problems.append(
                    f"{kind} of {steps[index].name} applied {len(fresh)} times: "
                    + "; ".join(line.brief() for line in fresh)
                )
    reruns = sum(n - 1 for n in Counter(line.message_id for line in obs.ledger).values())

    for index, lines in sorted(compensations.items()):
        name = steps[index].name
        first = lines[0]
        if not any(c.order < first.order for c in commands.get(index, [])):
            problems.append(
                f"compensation of {name} without a command for it before: {first.brief()}"
            )
        undone = [c.order for c in lines if c.fresh]
        redone = [c for c in commands.get(index, []) if c.fresh and undone and c.order > undone[0]]
        if redone:
            problems.append(f"{name} applied again after its compensation: {redone[0].brief()}")

    # Reverse order, one at a time: step j's compensation only once every higher one is done.
    compensated_steps = sorted(compensations)
    for j in compensated_steps:
        first_j = compensations[j][0]
        for i in compensated_steps:
            if i <= j:
                continue
            done_i = next((c for c in compensations[i] if c.applied), None)
            if done_i is None or done_i.order > first_j.order:
                when = "never" if done_i is None else f"only at #{done_i.order}"
                problems.append(
                    f"compensation of {steps[j].name} (#{first_j.order}) before that of "
                    f"{steps[i].name} was applied ({when})"
                )

    took_effect = {i for i, lines in commands.items() if any(c.applied for c in lines)}
    undone_steps = {i for i, lines in compensations.items() if any(c.applied for c in lines)}
    if status == "completed":
        for i, step in enumerate(steps):
            if i not in took_effect:
                problems.append(f"completed, but {step.name} was never applied")
            if compensations.get(i):
                problems.append(
                    f"completed, but {step.name} got a compensation: " + compensations[i][0].brief()
                )
    elif status == "compensated":
        for i in sorted(took_effect - undone_steps):
            if steps[i].compensation is not None:
                applied = next(c for c in commands[i] if c.applied)
                problems.append(
                    f"compensated, but {steps[i].name} took effect and was never compensated: "
                    + applied.brief()
                )
    if status in ROLLED_BACK and definition.pivot_index is not None:
        pivot = definition.pivot_index
        for i in range(pivot + 1, len(steps)):
            if commands.get(i):
                problems.append(
                    f"{status}, but {steps[i].name} after the pivot was commanded: "
                    + commands[i][0].brief()
                )
        history = (obs.view or {}).get("history") or []
        if any(
            h.get("event") == "step_succeeded" and h.get("step") == steps[pivot].name
            for h in history
        ):
            problems.append(f"{status}, but the pivot {steps[pivot].name} succeeded")

    expectation = planned.expect()
    extra_commands = extra_compensations = 0
    for step_view in (obs.view or {}).get("steps") or []:
        name = step_view.get("name")
        extra_commands += max(
            0, int(step_view.get("attempts") or 0) - expectation.command_attempts.get(name, 0)
        )
        extra_compensations += max(
            0,
            int(step_view.get("compensation_attempts") or 0)
            - expectation.compensation_attempts.get(name, 0),
        )

    terminal_events = [e for e in obs.events if e.value.get("status") in TERMINAL]
    announced = list(dict.fromkeys(str(e.value["status"]) for e in terminal_events))
    if len(announced) > 1:
        problems.append(
            f"saga.events announced it {' and later '.join(announced)}: "
            + "; ".join(e.brief() for e in terminal_events)
        )
    latency = None
    if obs.started_at is not None:
        if terminal_events:
            latency = terminal_events[0].timestamp - obs.started_at
        elif status in TERMINAL and obs.view and obs.view.get("updated_at"):
            latency = float(obs.view["updated_at"]) - obs.started_at
    return Verdict(
        saga_id=planned.saga_id,
        saga_type=planned.saga_type,
        scenario=planned.scenario,
        expected=expectation.status,
        status=status,
        problems=problems,
        handler_reruns=reruns,
        duplicate_effects=duplicate_effects,
        extra_command_attempts=extra_commands,
        extra_compensation_attempts=extra_compensations,
        latency=latency,
        events_status=terminal_events[0].value["status"] if terminal_events else None,
        terminal_statuses_in_events=sorted({str(e.value["status"]) for e in terminal_events}),
    )


# --------------------------------------------------------------------------- failover


@dataclass
class Fault:
    """One fault the run injected, and what it knows of the time around it."""

    kind: str
    """`worker_restart` (kill -9, restarted), `worker_gone` (kill -9 for good), `broker`
    (kill -9 of one node, restarted), `participants` (kill -9, restarted)."""
    target: str
    at: float
    """Wall time of the kill."""
    partitions: list[int] = field(default_factory=list)
    """The saga partitions the killed worker held (for a broker: those the live workers held)."""
    restarted_at: float | None = None
    ready_at: float | None = None
    starts: int = 0
    """Process starts it took to get the killed process ready again."""
    failed_starts: list[str] = field(default_factory=list)
    """Why the starts before the last one failed (the process's last log line)."""
    error: str | None = None


def progress_times(events: Iterable[EventRecord]) -> dict[int, list[float]]:
    """Per partition, the timestamps of its *new* transitions (a saga_id and seq not seen before
    on it), sorted: a replayed record re-publishes transitions already there, which is not
    progress."""
    seen: set[tuple[str, int]] = set()
    times: dict[int, list[float]] = defaultdict(list)
    for record in sorted(events, key=lambda r: (r.partition, r.offset)):
        key = (str(record.value.get("saga_id")), int(record.value.get("seq") or 0))
        if key in seen:
            continue
        seen.add(key)
        times[record.partition].append(record.timestamp)
    for values in times.values():
        values.sort()
    return times


def failover_time(fault: Fault, progress: dict[int, list[float]]) -> float | None:
    """Seconds from the kill until every one of the fault's partitions made progress again.

    Measured from outside: a partition has moved on when `saga.events` gets a new transition on
    it (see `progress_times`) timestamped after the kill. A killed worker produces nothing after
    its kill, so the first such transition is the new owner's (or the restarted worker's) first
    progress. The load keeps every partition busy (a transition every few tenths of a second at
    25 sagas/s), which bounds the error from above; None when a partition never moved again.
    """
    if not fault.partitions:
        return None
    worst = 0.0
    for partition in fault.partitions:
        times = progress.get(partition, [])
        at = bisect.bisect_right(times, fault.at)
        if at == len(times):
            return None
        worst = max(worst, times[at] - fault.at)
    return worst


# --------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Figures:
    sagas: int
    terminal: int
    by_status: dict[str, int]
    lost: int
    inconsistent: int
    duplicate_deliveries: int
    resent_copies: int
    handler_reruns: int
    duplicate_effects: int
    extra_command_attempts: int
    extra_compensation_attempts: int
    spurious_rollbacks: int
    missed_rollbacks: int
    view_event_disagreements: int
    latency_p50: float | None
    latency_p99: float | None
    failovers: dict[str, list[float | None]]
    """Per fault kind (workers, broker): `failover_time` of each fault of that kind."""
    fault_failovers: list[float | None]
    """`failover_time` of each fault, in the order given (None for the participants' kill)."""

    @property
    def extra_attempts(self) -> int:
        return self.extra_command_attempts + self.extra_compensation_attempts


def figures(
    verdicts: Sequence[Verdict],
    command_copies: dict[str, int],
    ledger: Sequence[LedgerLine],
    faults: Sequence[Fault],
    events: Iterable[EventRecord],
) -> Figures:
    """The run's figures. `command_copies`: message_id -> copies found in the command topics.

    A duplicate delivery is a command message that reached the participants more than once: for
    each message_id, the larger of its copies in the command topics (each one is consumed) and
    its handler runs in the ledger (a participants-side replay that got past the dedupe store),
    minus one. A lower bound: a replayed copy answered from the dedupe store is seen by neither.
    """
    runs = Counter(line.message_id for line in ledger)
    duplicate_deliveries = sum(
        max(command_copies.get(m, 0), runs.get(m, 0)) - 1
        for m in set(command_copies) | set(runs)
        if max(command_copies.get(m, 0), runs.get(m, 0)) > 1
    )
    progress = progress_times(events)
    failovers: dict[str, list[float | None]] = defaultdict(list)
    fault_failovers: list[float | None] = []
    for fault in faults:
        measured = None
        if fault.kind in ("worker_restart", "worker_gone", "broker"):
            measured = failover_time(fault, progress)
            failovers[fault.kind].append(measured)
        fault_failovers.append(measured)
    latencies = [v.latency for v in verdicts if v.terminal and v.latency is not None]
    return Figures(
        sagas=len(verdicts),
        terminal=sum(v.terminal for v in verdicts),
        by_status=dict(Counter(v.status for v in verdicts)),
        lost=sum(not v.terminal for v in verdicts),
        inconsistent=sum(v.inconsistent for v in verdicts),
        duplicate_deliveries=duplicate_deliveries,
        resent_copies=sum(n - 1 for n in command_copies.values() if n > 1),
        handler_reruns=sum(n - 1 for n in runs.values() if n > 1),
        duplicate_effects=sum(v.duplicate_effects for v in verdicts),
        extra_command_attempts=sum(v.extra_command_attempts for v in verdicts),
        extra_compensation_attempts=sum(v.extra_compensation_attempts for v in verdicts),
        spurious_rollbacks=sum(v.spurious_rollback for v in verdicts),
        missed_rollbacks=sum(v.missed_rollback for v in verdicts),
        view_event_disagreements=sum(v.view_disagrees_with_events for v in verdicts),
        latency_p50=statistics.median(latencies) if latencies else None,
        latency_p99=percentile(latencies, 0.99),
        failovers=dict(failovers),
        fault_failovers=fault_failovers,
    )
