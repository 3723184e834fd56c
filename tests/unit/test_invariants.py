"""Engine invariants over random and exhaustive runs: replies, timeouts, duplicates, reorderings.

A `World` is a saga plus what surrounds it: commands in flight (participants may answer any of
them, in any order, even after they timed out), the last reply (to deliver again), timers that
are no longer current (to deliver late), and an operator who may abort or retry at any time.
Every transition is checked against the invariants below; Hypothesis samples long random runs
over random definitions, and a breadth-first search walks every run of small definitions to a
bounded depth.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saga_app import Decision, RetryPolicy, SagaDefinition, SagaInput, SagaState, SagaStatus, Step
from saga_app import decide as engine_decide
from saga_app.engine import last_event
from saga_app.state import FINAL_STATUSES
from topics import AbortSaga, Command, Outcome, Reply, RetrySaga, SagaTimeout, StartSaga

SAGA = "saga-1"
REPLY_TO = "saga.replies"
OUTCOMES: tuple[Outcome, ...] = ("success", "failure", "retry")


@dataclass(frozen=True)
class World:
    """A saga and its surroundings, immutable so that a search can branch from it."""

    definition: SagaDefinition
    state: SagaState | None = None
    now: float = 0.0
    in_flight: tuple[Command, ...] = ()
    last_reply: Reply | None = None
    stale_timers: tuple[SagaTimeout, ...] = ()
    sent_ids: frozenset[str] = frozenset()
    succeeded: frozenset[str] = frozenset()  # steps whose success reply was applied
    answered: frozenset[tuple[str, str, int]] = frozenset()  # (step, kind, attempt) applied
    last_forward: tuple[str, int] | None = None  # the latest command sent: (step, attempt)
    compensations: tuple[str, ...] = ()  # steps compensated, in order, retries collapsed
    expected: tuple[str, ...] | None = None  # what must be compensated, fixed when it begins
    finals: tuple[SagaStatus, ...] = ()  # final statuses reached, in order
    transitions: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Transition:
    """One event applied to a world, with the decision the engine took."""

    before: World
    event: SagaInput
    decision: Decision
    after: World


Invariant = Callable[[Transition], None]


# -- the invariants -----------------------------------------------------------------------------


def replay_is_identical(t: Transition) -> None:
    """Deciding the same event on the same state again gives an equal decision."""
    again = engine_decide(
        t.before.definition, t.before.state, t.event, t.before.now, reply_to=REPLY_TO
    )
    assert again == t.decision, f"replaying {t.event!r} decided differently"


def second_delivery_changes_nothing(t: Transition) -> None:
    """Applying an event that was just applied is ignored: same state, nothing sent."""
    if t.decision.ignored is not None:
        return
    again = engine_decide(
        t.before.definition, t.after.state, t.event, t.after.now, reply_to=REPLY_TO
    )
    assert again.ignored is not None, f"{t.event!r} applied twice changed the saga twice"
    assert again.state is t.after.state
    assert again.commands == () and again.events == ()


def ignored_means_untouched(t: Transition) -> None:
    """An ignored event returns the very same state and sends nothing."""
    if t.decision.ignored is not None:
        assert t.decision.state is t.before.state
        assert t.decision.commands == () and t.decision.events == ()


def one_command_at_a_time_with_unique_ids(t: Transition) -> None:
    """At most one command per decision, each id `{saga}:{step}:{kind}:{attempt}`, never reused."""
    assert len(t.decision.commands) <= 1, "commands go one at a time"
    for out in t.decision.commands:
        c = out.command
        assert c.message_id == f"{c.saga_id}:{c.step}:{c.kind}:{c.attempt}"
        assert c.message_id not in t.before.sent_ids, f"{c.message_id} was sent twice"


def nothing_sent_after_a_final_status(t: Transition) -> None:
    """A completed or compensated saga never changes again; a failed one only on retry."""
    before = t.before.state
    if before is None:
        return
    if before.status in FINAL_STATUSES:
        assert t.decision.ignored is not None, f"{before.status} saga reacted to {t.event!r}"
    if before.status == SagaStatus.FAILED and not isinstance(t.event, RetrySaga):
        assert t.decision.ignored is not None, f"failed saga reacted to {t.event!r}"


def nothing_compensated_after_the_pivot(t: Transition) -> None:
    """Once the pivot succeeded no compensation is ever sent."""
    pivot = t.before.definition.pivot_index
    if pivot is None or t.after.definition.steps[pivot].name not in t.after.succeeded:
        return
    assert t.after.compensations == (), "compensated after the pivot succeeded"
    assert t.after.state is not None
    assert t.after.state.status in (SagaStatus.IN_PROGRESS, SagaStatus.COMPLETED)


def compensations_undo_what_was_done_in_reverse(t: Transition) -> None:
    """Compensations sent are a prefix of: succeeded or in-doubt compensatable steps, reversed."""
    after = t.after
    if after.expected is None:
        assert after.compensations == ()
        return
    done = after.compensations
    assert done == after.expected[: len(done)], (
        f"compensated {done}, expected a prefix of {after.expected}"
    )
    assert after.state is not None
    if after.state.status == SagaStatus.COMPENSATED:
        assert done == after.expected, f"compensated {done}, expected all of {after.expected}"


def history_mirrors_events(t: Transition) -> None:
    """Every event continues the seq and is appended to the history, in order."""
    if t.decision.ignored is not None or t.decision.state is None:
        return
    first = t.before.state.last_seq + 1 if t.before.state else 1
    seqs = [e.seq for e in t.decision.events]
    assert seqs == list(range(first, first + len(seqs)))
    tail = t.decision.state.history[first - 1 :]
    assert [(h.seq, h.event, h.step, h.attempt) for h in tail] == [
        (e.seq, e.event, e.step, e.attempt) for e in t.decision.events
    ]
    if t.decision.events:
        assert last_event(t.decision.state) == t.decision.events[-1], "a replay re-sends it"


ALL_INVARIANTS: tuple[Invariant, ...] = (
    replay_is_identical,
    second_delivery_changes_nothing,
    ignored_means_untouched,
    one_command_at_a_time_with_unique_ids,
    nothing_sent_after_a_final_status,
    nothing_compensated_after_the_pivot,
    compensations_undo_what_was_done_in_reverse,
    history_mirrors_events,
)


# -- the world ----------------------------------------------------------------------------------


def _expected_compensations(world: World) -> tuple[str, ...]:
    """Oracle, from what the participants saw: done steps plus the in-doubt one, reversed."""
    in_doubt = None
    if world.last_forward is not None:
        step, attempt = world.last_forward
        if (step, "command", attempt) not in world.answered:
            in_doubt = step
    return tuple(
        s.name
        for s in reversed(world.definition.steps)
        if s.compensation is not None and (s.name in world.succeeded or s.name == in_doubt)
    )


def apply(
    world: World, event: SagaInput, invariants: Sequence[Invariant] = ALL_INVARIANTS
) -> World:
    """Deliver `event`, check the invariants on the transition, return the world after it."""
    snapshot = world.state.model_dump() if world.state is not None else None
    decision = engine_decide(world.definition, world.state, event, world.now, reply_to=REPLY_TO)
    if world.state is not None:
        assert world.state.model_dump() == snapshot, "decide mutated its input state"
    after = _advance(world, event, decision)
    transition = Transition(world, event, decision, after)
    for invariant in invariants:
        invariant(transition)
    return after


def _advance(world: World, event: SagaInput, decision: Decision) -> World:
    in_flight = world.in_flight
    if isinstance(event, Reply):  # a participant answers each command once (duplicates aside)
        in_flight = tuple(
            c
            for c in in_flight
            if (c.step, c.kind, c.attempt) != (event.step, event.kind, event.attempt)
        )
    if decision.ignored is not None:
        return dataclasses.replace(world, in_flight=in_flight, transitions=world.transitions + 1)
    state = decision.state
    assert state is not None
    changes: dict[str, object] = {"state": state, "transitions": world.transitions + 1}
    sent = [out.command for out in decision.commands]
    changes["in_flight"] = in_flight + tuple(sent)
    changes["sent_ids"] = world.sent_ids | {c.message_id for c in sent}
    if isinstance(event, Reply):
        changes["last_reply"] = event
        changes["answered"] = world.answered | {(event.step, event.kind, event.attempt)}
        if event.kind == "command" and event.outcome == "success":
            changes["succeeded"] = world.succeeded | {event.step}
    compensations = world.compensations
    for c in sent:
        if c.kind == "command":
            changes["last_forward"] = (c.step, c.attempt)
        elif not compensations or compensations[-1] != c.step:
            compensations = (*compensations, c.step)
    changes["compensations"] = compensations
    if state.status in FINAL_STATUSES:
        changes["finals"] = (*world.finals, state.status)
    old_timers = world.state.timers() if world.state is not None else []
    current = state.timers()
    stale = [t for t in old_timers if t not in current and t not in world.stale_timers]
    changes["stale_timers"] = (*world.stale_timers, *stale)[-2:]
    after = dataclasses.replace(world, **changes)  # type: ignore[arg-type]
    before_status = world.state.status if world.state is not None else None
    rolling_back = state.status not in (SagaStatus.IN_PROGRESS, SagaStatus.COMPLETED)
    if before_status == SagaStatus.IN_PROGRESS and rolling_back:
        after = dataclasses.replace(after, expected=_expected_compensations(after))
    return after


def _reply(command: Command, outcome: Outcome) -> Reply:
    return command.reply(
        outcome,
        data={command.step: command.attempt} if outcome == "success" else {},
        error=None if outcome == "success" else f"{outcome} from {command.step}",
        message_id=f"reply:{command.message_id}:{outcome}",
    )


def start_event(definition: SagaDefinition) -> StartSaga:
    return StartSaga(saga_id=SAGA, saga_type=definition.name, payload={"n": 1})


def possible_events(world: World) -> list[SagaInput]:
    """Everything that could reach the orchestrator next, in a fixed order."""
    if world.state is None:
        return [start_event(world.definition)]
    events: list[SagaInput] = []
    for command in world.in_flight:
        events.extend(_reply(command, outcome) for outcome in OUTCOMES)
    if world.last_reply is not None:
        events.append(world.last_reply)
    events.extend(world.state.timers())
    events.extend(world.stale_timers)
    events += [AbortSaga(saga_id=SAGA), RetrySaga(saga_id=SAGA), start_event(world.definition)]
    return events


def at_time_of(world: World, event: SagaInput) -> World:
    """The clock as the orchestrator sees it: a timer arrives no earlier than it is due."""
    if isinstance(event, SagaTimeout) and event.due_at > world.now:
        return dataclasses.replace(world, now=event.due_at)
    return world


def step(world: World, event: SagaInput, invariants: Sequence[Invariant] = ALL_INVARIANTS) -> World:
    return apply(at_time_of(world, event), event, invariants)


def drive_to_the_end(world: World, invariants: Sequence[Invariant] = ALL_INVARIANTS) -> World:
    """Let participants succeed, timers fire and the operator re-drive, until the saga is final."""
    for _ in range(200):
        state = world.state
        assert state is not None
        if state.status in FINAL_STATUSES:
            return world
        if state.status == SagaStatus.FAILED:
            world = step(world, RetrySaga(saga_id=SAGA), invariants)
            continue
        awaited = [c for c in world.in_flight if state.awaits(c.step, c.kind, c.attempt)]
        if awaited:
            world = step(world, _reply(awaited[0], "success"), invariants)
        else:
            timers = sorted(state.timers(), key=lambda t: t.due_at)
            assert timers, f"a {state.status} saga waits for nothing: it is stuck"
            world = step(world, timers[0], invariants)
    raise AssertionError("the saga did not finish within 200 transitions")


def check_finished_for_good(world: World) -> None:
    """Exactly one final status was reached, and nothing that can still arrive changes it."""
    assert world.state is not None
    assert len(world.finals) == 1, f"final statuses reached: {world.finals}"
    assert world.state.status == world.finals[0]
    for event in possible_events(world):
        decision = engine_decide(world.definition, world.state, event, world.now, reply_to=REPLY_TO)
        assert decision.ignored is not None and decision.commands == ()
    ends = [
        h.event for h in world.state.history if h.event in ("saga_completed", "saga_compensated")
    ]
    assert len(ends) == 1


# -- random definitions and runs ----------------------------------------------------------------


@st.composite
def definitions(draw: st.DrawFn) -> SagaDefinition:
    """1-4 steps, random compensations, pivot, attempts, backoffs and deadline."""
    n = draw(st.integers(1, 4))
    pivot = draw(st.none() | st.integers(0, n - 1))
    steps = []
    for i in range(n):
        compensable = (pivot is None or i <= pivot) and draw(st.booleans())
        steps.append(
            Step(
                name=f"s{i}",
                participant=f"p{i}",
                action=f"do{i}",
                compensation=f"undo{i}" if compensable else None,
                timeout=draw(st.sampled_from([1.0, 2.5])),
                retry=RetryPolicy(
                    max_attempts=draw(st.integers(1, 3)),
                    initial_delay=draw(st.sampled_from([0.0, 0.5])),
                ),
                compensation_retry=RetryPolicy(
                    max_attempts=draw(st.integers(1, 3)),
                    initial_delay=draw(st.sampled_from([0.0, 0.5])),
                ),
                pivot=i == pivot,
            )
        )
    deadline = draw(st.none() | st.sampled_from([2.0, 7.0]))
    return SagaDefinition("random", 1, tuple(steps), deadline=deadline)


CHOICES = st.lists(st.integers(0, 1_000), min_size=5, max_size=60)


def _weighted_events(world: World) -> list[SagaInput]:
    """possible_events, with successes and due timers more likely so that runs get far."""
    events = possible_events(world)
    progress = [e for e in events if isinstance(e, Reply) and e.outcome == "success"]
    if world.state is not None:
        progress += world.state.timers()
    return events + progress * 3


def random_run(
    definition: SagaDefinition, choices: list[int], invariants: Sequence[Invariant]
) -> World:
    world = step(World(definition), start_event(definition), invariants)
    for choice in choices:
        events = _weighted_events(world)
        world = step(world, events[choice % len(events)], invariants)
    return world


RANDOM = settings(max_examples=150, deadline=None)


@RANDOM
@given(definitions(), CHOICES)
def test_every_invariant_holds_on_random_runs(
    definition: SagaDefinition, choices: list[int]
) -> None:
    """Random replies, timeouts, duplicates, late messages and operator actions break nothing."""
    world = drive_to_the_end(random_run(definition, choices, ALL_INVARIANTS))
    check_finished_for_good(world)


@RANDOM
@given(definitions(), CHOICES)
def test_a_driven_run_reaches_exactly_one_final_status(
    definition: SagaDefinition, choices: list[int]
) -> None:
    """Whatever happened, letting things succeed ends the saga in exactly one final status."""
    world = drive_to_the_end(random_run(definition, choices, ()), ())
    check_finished_for_good(world)


@RANDOM
@given(definitions(), CHOICES)
def test_compensations_are_the_done_steps_in_reverse(
    definition: SagaDefinition, choices: list[int]
) -> None:
    """Compensated steps are exactly the succeeded (or in-doubt) compensatable ones, reversed."""
    invariants = (compensations_undo_what_was_done_in_reverse, nothing_compensated_after_the_pivot)
    world = drive_to_the_end(random_run(definition, choices, invariants), invariants)
    if world.expected is not None:
        assert world.compensations == world.expected


@RANDOM
@given(definitions(), CHOICES)
def test_every_event_applied_twice_changes_nothing_the_second_time(
    definition: SagaDefinition, choices: list[int]
) -> None:
    """Redelivering any event right after it was applied is ignored and replays send equal ids."""
    invariants = (replay_is_identical, second_delivery_changes_nothing, ignored_means_untouched)
    drive_to_the_end(random_run(definition, choices, invariants), invariants)


@RANDOM
@given(definitions(), CHOICES)
def test_message_ids_are_unique_and_nothing_follows_the_end(
    definition: SagaDefinition, choices: list[int]
) -> None:
    """No (saga, step, kind, attempt) is sent twice, and a finished saga sends nothing."""
    invariants = (one_command_at_a_time_with_unique_ids, nothing_sent_after_a_final_status)
    world = drive_to_the_end(random_run(definition, choices, invariants), invariants)
    assert len(world.sent_ids) == sum(
        s.attempts + s.compensation_attempts for s in world.state.steps if world.state
    )


# -- exhaustive exploration ---------------------------------------------------------------------


def _policy(attempts: int, delay: float) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, initial_delay=delay, max_delay=max(delay, 1.0))


def small_definition(
    name: str, shape: str, *, pivot: int | None = None, deadline: float | None = None
) -> SagaDefinition:
    """`shape` has one letter per step: C compensable, N not; retries are 2 with backoff."""
    return SagaDefinition(
        name,
        1,
        tuple(
            Step(
                name=f"s{i}",
                participant="p",
                action=f"do{i}",
                compensation=f"undo{i}" if letter == "C" else None,
                timeout=1.0,
                retry=_policy(2, 0.5 if i % 2 else 0.0),
                compensation_retry=_policy(2, 0.0 if i % 2 else 0.5),
                pivot=i == pivot,
            )
            for i, letter in enumerate(shape)
        ),
        deadline=deadline,
    )


SMALL_DEFINITIONS = [
    small_definition("one", "C", deadline=3.0),
    small_definition("two", "CC"),
    small_definition("two_pivot_last", "CC", pivot=1, deadline=3.0),
    small_definition("three", "CNC"),
    small_definition("three_pivot_middle", "CCN", pivot=1, deadline=3.0),
    small_definition("three_pivot_first", "CNN", pivot=0),
]


def _key(world: World) -> tuple[object, ...]:
    """What decides the future of a world; clock readings are left out."""
    s = world.state
    assert s is not None
    return (
        s.status,
        s.cursor,
        tuple(
            (x.status, x.attempts, x.compensation_attempts, x.in_doubt, x.redriven_at)
            for x in s.steps
        ),
        (s.timer.timer, s.timer.step, s.timer.kind, s.timer.attempt) if s.timer else None,
        s.deadline_at is None,
        tuple(s.handled_replies),
        tuple(sorted(s.context.items())),
        tuple(c.message_id for c in world.in_flight),
        world.last_reply.in_reply_to if world.last_reply else None,
        tuple((t.timer, t.step, t.kind, t.attempt) for t in world.stale_timers),
        world.compensations,
        world.expected,
        world.finals,
    )


def explore(definition: SagaDefinition, depth: int) -> Iterator[World]:
    """Breadth-first over every sequence of events up to `depth`, each distinct world once."""
    root = step(World(definition), start_event(definition))
    seen = {_key(root)}
    queue = deque([(root, 0)])
    while queue:
        world, level = queue.popleft()
        yield world
        if level == depth:
            continue
        for event in possible_events(world):
            after = step(world, event)
            key = _key(after)
            if key not in seen:
                seen.add(key)
                queue.append((after, level + 1))


EXPLORATION_DEPTH = 9


@pytest.mark.parametrize("definition", SMALL_DEFINITIONS, ids=lambda d: d.name)
def test_exhaustive_exploration_keeps_every_invariant(
    definition: SagaDefinition, record_property: Callable[[str, object], None]
) -> None:
    """Every order of replies, timeouts, duplicates and operator actions, to a depth, holds."""
    visited = 0
    finished = 0
    for world in explore(definition, EXPLORATION_DEPTH):
        visited += 1
        assert world.state is not None
        if world.state.status in FINAL_STATUSES:
            finished += 1
            check_finished_for_good(world)
    print(f"\n{definition.name}: {visited} distinct worlds, {finished} finished")
    record_property("worlds_visited", visited)
    assert visited >= 300, f"only {visited} worlds explored: the exploration lost its reach"
    assert finished >= 10


@pytest.mark.parametrize("definition", SMALL_DEFINITIONS[:3], ids=lambda d: d.name)
def test_every_explored_world_can_still_finish(definition: SagaDefinition) -> None:
    """From any world reached, letting things succeed ends the saga in one final status."""
    for world in itertools.islice(explore(definition, 6), 2_000):
        check_finished_for_good(drive_to_the_end(world, ()))
