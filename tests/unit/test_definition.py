"""The definition DSL: retry policies, steps and sagas are validated when built."""

from __future__ import annotations

import dataclasses

import pytest

from saga_app import DefinitionError, RetryPolicy, SagaDefinition, Step, UnknownSagaType
from saga_app.registry import EXAMPLES, load_sagas
from saga_app.sagas import CREATE_ORDER

EXAMPLE_SAGAS = load_sagas([EXAMPLES])


def _step(name: str = "a", **overrides: object) -> Step:
    fields: dict[str, object] = {"participant": "p", "action": "do", "compensation": "undo"}
    fields.update(overrides)
    return Step(name=name, **fields)  # type: ignore[arg-type]


def test_backoff_grows_by_the_multiplier_until_max_delay() -> None:
    """Without jitter the delay before attempt N is initial * multiplier**(N-2), capped."""
    policy = RetryPolicy(initial_delay=0.5, multiplier=2.0, max_delay=3.0, jitter=0.0)
    assert [policy.backoff(n, "seed") for n in range(2, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_jitter_is_deterministic_and_only_shortens() -> None:
    """Jitter depends on the seed alone and keeps the delay in [(1 - jitter) * nominal, nominal]."""
    policy = RetryPolicy(initial_delay=1.0, multiplier=1.0, max_delay=1.0, jitter=0.5)
    delays = [policy.backoff(2, f"saga-{i}:step:command:2") for i in range(200)]
    assert delays == [policy.backoff(2, f"saga-{i}:step:command:2") for i in range(200)]
    assert all(0.5 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 150, "different seeds should spread the retries"


def test_backoff_survives_attempt_numbers_that_overflow_floats() -> None:
    """A step retried forever after the pivot never overflows: the delay stays at max_delay."""
    policy = RetryPolicy(initial_delay=0.5, multiplier=10.0, max_delay=4.0, jitter=0.0)
    assert policy.backoff(5_000, "seed") == 4.0


def test_backoff_is_zero_when_the_initial_delay_is() -> None:
    """initial_delay=0 means retry at once, whatever the attempt."""
    assert RetryPolicy(initial_delay=0.0).backoff(9, "x") == 0.0


def test_backoff_refuses_the_first_attempt() -> None:
    """There is no backoff before attempt 1: asking for it is a programming error."""
    with pytest.raises(ValueError, match="attempt must be >= 2"):
        RetryPolicy().backoff(1, "x")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"initial_delay": -1.0}, "initial_delay must be >= 0"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"initial_delay": 5.0, "max_delay": 1.0}, "max_delay"),
        ({"jitter": 1.0}, "jitter must be in"),
    ],
)
def test_retry_policy_rejects_nonsense(fields: dict[str, float], message: str) -> None:
    """Each invalid retry policy field gets a DefinitionError naming it."""
    with pytest.raises(DefinitionError, match=message):
        RetryPolicy(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "step name '' must be non-empty"),
        ({"name": "a:b"}, "step name 'a:b'"),
        ({"participant": "has space"}, "participant of step 'a'"),
        ({"action": ""}, "step 'a' needs an action"),
        ({"compensation": ""}, "compensation must be an action name or None"),
        ({"timeout": 0.0}, "timeout must be > 0"),
    ],
)
def test_step_rejects_nonsense(overrides: dict[str, object], message: str) -> None:
    """Each invalid step field gets a DefinitionError saying what to fix."""
    fields: dict[str, object] = {"name": "a"}
    fields.update(overrides)
    with pytest.raises(DefinitionError, match=message):
        _step(**fields)  # type: ignore[arg-type]


def test_saga_needs_steps() -> None:
    """A saga without steps is rejected."""
    with pytest.raises(DefinitionError, match="needs at least one step"):
        SagaDefinition("empty", 1, ())


def test_saga_rejects_duplicate_step_names() -> None:
    """Step names key message ids and views, so they must be unique."""
    with pytest.raises(DefinitionError, match="step name 'a' is used twice"):
        SagaDefinition("dup", 1, (_step("a"), _step("a")))


def test_saga_rejects_two_pivots() -> None:
    """There is at most one point of no return."""
    with pytest.raises(DefinitionError, match="more than one pivot: 'a', 'b'"):
        SagaDefinition("two", 1, (_step("a", pivot=True), _step("b", pivot=True)))


def test_steps_after_the_pivot_must_not_need_compensation() -> None:
    """A step after the pivot is retried until it succeeds, so a compensation there is a mistake."""
    with pytest.raises(DefinitionError, match="'b' comes after the pivot 'a'"):
        SagaDefinition("late", 1, (_step("a", pivot=True), _step("b")))


@pytest.mark.parametrize(("version", "deadline"), [(0, None), (1, 0.0)])
def test_saga_rejects_bad_version_or_deadline(version: int, deadline: float | None) -> None:
    """Versions start at 1 and deadlines are positive."""
    with pytest.raises(DefinitionError):
        SagaDefinition("bad", version, (_step(),), deadline=deadline)


def test_definitions_are_frozen() -> None:
    """A running saga can trust its definition: nobody can change it."""
    definition = SagaDefinition("s", 1, (_step(),))
    with pytest.raises(dataclasses.FrozenInstanceError):
        definition.version = 2  # type: ignore[misc]


def test_describe_lists_steps_and_policies_as_plain_data() -> None:
    """describe() is the JSON-able form that GET /definitions serves."""
    described = CREATE_ORDER.describe()
    assert described["name"] == "create_order"
    assert described["pivot"] == "charge_payment"
    first = described["steps"][0]
    assert first["participant"] == "orders"
    assert first["compensation"] == "cancel_order"
    assert first["retry"]["max_attempts"] >= 3


EXPECTED_STEPS = {
    "create_order": [
        ("create_order", "orders", "create_order", "cancel_order"),
        ("reserve_stock", "inventory", "reserve_stock", "release_stock"),
        ("charge_payment", "payments", "charge", "refund"),
        ("send_confirmation", "notifications", "send_confirmation", None),
    ],
    "create_experiment": [
        ("create_experiment", "experiments", "create", "delete"),
        ("allocate_resources", "resources", "allocate", "release"),
        ("initialize_metrics", "metrics", "initialize", "cleanup"),
        ("notify_user", "notifications", "notify_user", None),
    ],
    "create_run": [
        ("create_run", "experiments", "create_run", "delete_run"),
        ("reserve_resources", "resources", "reserve", "release"),
        ("initialize_metrics", "metrics", "initialize", "cleanup"),
        ("start_worker", "workers", "start", "stop"),
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_STEPS))
def test_example_sagas_follow_the_design(name: str) -> None:
    """Step names, participants, actions and compensations are exactly DESIGN.md's."""
    definition = EXAMPLE_SAGAS.newest(name)
    steps = [(s.name, s.participant, s.action, s.compensation) for s in definition.steps]
    assert steps == EXPECTED_STEPS[name]
    for step in definition.steps:
        assert step.timeout <= 5.0, "demo timeouts are a few seconds"
        assert step.retry.max_attempts >= 3


def test_only_charge_payment_is_a_pivot() -> None:
    """create_order's point of no return is the payment; the other sagas have none."""
    pivots = {d.name: d.pivot_index for d in EXAMPLE_SAGAS.orchestrated()}
    assert pivots == {"create_order": 2, "create_experiment": None, "create_run": None}


def test_unknown_saga_type_lists_the_known_ones() -> None:
    """Asking for a type that does not exist says which ones do."""
    with pytest.raises(UnknownSagaType) as raised:
        EXAMPLE_SAGAS.newest("create_pizza")
    assert str(raised.value) == (
        "unknown saga type 'create_pizza'; known types: create_experiment, "
        "create_experiment_choreo, create_order, create_run"
    )
    assert raised.value.known == (
        "create_experiment",
        "create_experiment_choreo",
        "create_order",
        "create_run",
    )
