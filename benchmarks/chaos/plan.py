"""What the chaos run starts: sagas of the three example types with mixed, planned outcomes.

Every saga's outcome is decided up front by the `simulate` hooks in its payload (DESIGN.md,
"Example sagas"), so the checker knows what each saga would do with no fault at all: its final
status and how many attempts each step and compensation takes. Anything beyond that is the
faults' doing (extra attempts, spurious rollbacks) or a bug (inconsistencies).

The participants run with limits no saga reaches (credit, stock, resources: see
`PARTICIPANT_ENV`), so a domain failure never happens unless a hook asks for it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

from saga_app.definition import SagaDefinition
from saga_app.sagas import CREATE_EXPERIMENT, CREATE_ORDER, CREATE_RUN

DEFINITIONS: dict[str, SagaDefinition] = {
    d.name: d for d in (CREATE_ORDER, CREATE_EXPERIMENT, CREATE_RUN)
}
TYPES = tuple(DEFINITIONS)

PARTICIPANT_ENV = {
    "SAGA_CREDIT_LIMIT": "1e15",
    "SAGA_STOCK_PER_SKU": str(10**12),
    "SAGA_RESOURCE_POOL": str(10**12),
}
"""Limits of the example participants (read at import) that no chaos run reaches."""

Status = Literal["completed", "compensated", "failed"]

SCENARIOS: tuple[tuple[str, float], ...] = (
    ("happy", 0.50),
    ("flaky", 0.12),  # a step answers `retry` once or twice, then succeeds
    ("fail", 0.14),  # a step fails: the steps before it are compensated
    ("fail_undo_retry", 0.08),  # as `fail`, and one compensation fails once or twice first
    ("exhausted", 0.05),  # a step answers `retry` more often than it is tried
    ("timeout", 0.06),  # a step never answers (its effect happens): it is compensated too
    ("slow_last", 0.05),  # the last step answers `retry` 2-4 times (after a pivot: unlimited)
)
"""Scenario names and their shares of the run."""


@dataclass(frozen=True)
class Expectation:
    """What a saga does when nothing goes wrong but what its hooks ask for."""

    status: Status
    command_attempts: dict[str, int]
    """Per step: the attempts the orchestrator sends (steps never reached are left out)."""
    compensation_attempts: dict[str, int]
    """Per step: the compensation attempts it sends (steps not compensated are left out)."""


@dataclass(frozen=True)
class PlannedSaga:
    saga_id: str
    saga_type: str
    scenario: str
    payload: dict[str, Any] = field(compare=False)

    @property
    def simulate(self) -> dict[str, str]:
        hooks = self.payload.get("simulate", {})
        return dict(hooks) if isinstance(hooks, dict) else {}

    @property
    def definition(self) -> SagaDefinition:
        return DEFINITIONS[self.saga_type]

    def expect(self) -> Expectation:
        return expect(self.definition, self.simulate)


def _count(hook: str) -> int:
    return int(hook.split(":", 1)[1])


def expect(definition: SagaDefinition, simulate: dict[str, str]) -> Expectation:
    """The outcome the engine's rules give for these hooks (engine.py's module docstring)."""
    pivot = definition.pivot_index
    attempts: dict[str, int] = {}
    failed_at: int | None = None
    in_doubt = False
    for i, step in enumerate(definition.steps):
        hook = simulate.get(step.name, "")
        forward_only = pivot is not None and i > pivot
        most = step.retry.max_attempts
        if hook in ("fail", "timeout") and forward_only:
            raise ValueError(f"{step.name!r} comes after the pivot: {hook!r} would never end")
        if hook == "fail":
            attempts[step.name], failed_at = 1, i
            break
        if hook == "timeout":
            attempts[step.name], failed_at, in_doubt = most, i, True
            break
        if hook.startswith("flaky:"):
            wanted = _count(hook) + 1
            if forward_only or wanted <= most:
                attempts[step.name] = wanted
                continue
            attempts[step.name], failed_at = most, i
            break
        attempts[step.name] = 1
    if failed_at is None:
        return Expectation("completed", attempts, {})
    compensations: dict[str, int] = {}
    status: Status = "compensated"
    first = failed_at if in_doubt else failed_at - 1
    for j in range(first, -1, -1):
        step = definition.steps[j]
        if step.compensation is None:
            continue
        hook = simulate.get(step.name, "")
        failures = _count(hook) if hook.startswith("fail_compensation:") else 0
        most = step.compensation_retry.max_attempts
        if failures >= most:
            compensations[step.name], status = most, "failed"
            break
        compensations[step.name] = failures + 1
    return Expectation(status, attempts, compensations)


def _payload(saga_type: str, n: int) -> dict[str, Any]:
    if saga_type == "create_order":
        return {
            "customer_id": f"customer-{n}",
            "items": [{"sku": f"sku-{n % 40}", "qty": 1 + n % 3}],
            "amount": 10.0 + n % 7,
        }
    if saga_type == "create_experiment":
        return {"user_id": f"user-{n % 25}", "name": f"experiment-{n}", "resources": {"gpus": 1}}
    return {"experiment_id": f"experiment-{n}", "config": {"lr": 0.01}, "resources": 2}


def _hooks(definition: SagaDefinition, scenario: str, rng: random.Random) -> dict[str, str]:
    steps = [s.name for s in definition.steps]
    pivot = definition.pivot_index
    can_fail = steps if pivot is None else steps[: pivot + 1]
    if scenario == "happy":
        return {}
    if scenario == "flaky":
        return {rng.choice(steps): f"flaky:{rng.randint(1, 2)}"}
    if scenario == "fail":
        return {rng.choice(can_fail): "fail"}
    if scenario == "fail_undo_retry":
        at = rng.randrange(1, len(can_fail))
        undo = [s.name for s in definition.steps[:at] if s.compensation is not None]
        return {can_fail[at]: "fail", rng.choice(undo): f"fail_compensation:{rng.randint(1, 2)}"}
    if scenario == "exhausted":
        return {rng.choice(can_fail): "flaky:3"}
    if scenario == "timeout":
        return {rng.choice(can_fail): "timeout"}
    if scenario == "slow_last":
        return {steps[-1]: f"flaky:{rng.randint(2, 4) if pivot is not None else 2}"}
    raise ValueError(f"unknown scenario {scenario!r}")


def make_plan(count: int, run_id: str, seed: int = 0) -> list[PlannedSaga]:
    """`count` sagas cycling through the three types, scenarios drawn by their shares."""
    rng = random.Random(seed)
    names = [name for name, _ in SCENARIOS]
    weights = [share for _, share in SCENARIOS]
    plan = []
    for n in range(count):
        saga_type = TYPES[n % len(TYPES)]
        scenario = rng.choices(names, weights)[0]
        payload = _payload(saga_type, n)
        hooks = _hooks(DEFINITIONS[saga_type], scenario, rng)
        if hooks:
            payload["simulate"] = hooks
        plan.append(PlannedSaga(f"{run_id}-{n:05d}", saga_type, scenario, payload))
    return plan
