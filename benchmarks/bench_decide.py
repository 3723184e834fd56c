"""Cost of `decide` per event for create_order, over a few thousand sagas (not a test).

Run `make bench`, or `python -m benchmarks.bench_decide [sagas]` from the project root. Every
saga's events are applied one at a time, as the orchestrator would, while all the states stay
alive (so the garbage collector sees a realistic heap). Prints microseconds per event per path.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time

from saga_app import SagaState, decide
from saga_app.sagas import CREATE_ORDER
from topics import Outcome, Reply, SagaTimeout, StartSaga

PAYLOAD = {
    "customer_id": "c-42",
    "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
    "amount": 99,
}
REPLY_TO = "saga.replies"

PATHS: dict[str, list[Outcome | None]] = {
    "happy": ["success"] * 4,
    "compensation": ["success", "success", "failure", "success", "success"],
    "retries": ["retry", "success", None, "success", "success", "success"],
}
"""What happens to each command in turn: a reply with that outcome, or None for a timeout."""


def _event(state: SagaState, outcome: Outcome | None) -> tuple[Reply | SagaTimeout, float]:
    """The next event for `state`: its due timer if it waits for one, else a reply."""
    timer = state.timer
    assert timer is not None
    if outcome is None or timer.timer == "backoff":
        return state.timers()[0], timer.due_at
    reply = Reply(
        message_id=f"reply:{state.saga_id}:{timer.step}:{timer.attempt}",
        in_reply_to=f"{state.saga_id}:{timer.step}:{timer.kind}:{timer.attempt}",
        saga_id=state.saga_id,
        step=timer.step,
        kind=timer.kind,
        attempt=timer.attempt,
        outcome=outcome,
        data={f"{timer.step}_id": "x"} if outcome == "success" else {},
    )
    return reply, timer.due_at - 1.0


def _timed(
    state: SagaState | None, event: StartSaga | Reply | SagaTimeout, now: float
) -> tuple[SagaState, float]:
    t0 = time.perf_counter()
    decision = decide(CREATE_ORDER, state, event, now, reply_to=REPLY_TO)
    elapsed = time.perf_counter() - t0
    assert decision.ignored is None and decision.state is not None
    return decision.state, elapsed


def run(path: list[Outcome | None], sagas: int) -> list[float]:
    """Drive `sagas` sagas along `path` in lock step; the time of every decide, in seconds."""
    timings: list[float] = []
    states: list[SagaState] = []
    for i in range(sagas):
        start = StartSaga(saga_id=f"order-{i}", saga_type="create_order", payload=PAYLOAD)
        state, elapsed = _timed(None, start, 1_000.0)
        states.append(state)
        timings.append(elapsed)
    for outcome in path:
        for i, state in enumerate(states):
            while True:
                waiting_for_backoff = state.timer is not None and state.timer.timer == "backoff"
                event, now = _event(state, outcome)
                state, elapsed = _timed(state, event, now)
                timings.append(elapsed)
                if not waiting_for_backoff:
                    break
            states[i] = state
    return timings


def main() -> None:
    sagas = int(sys.argv[1]) if len(sys.argv) > 1 else 3_000
    print(f"decide() on create_order, {sagas} sagas per path, Python {sys.version.split()[0]}")
    run(PATHS["happy"], 300)  # warm up
    for name, path in PATHS.items():
        gc.collect()
        timings = sorted(run(path, sagas))
        print(
            f"{name:<13} {len(timings):>6} events  "
            f"mean {statistics.fmean(timings) * 1e6:5.1f} µs  "
            f"median {statistics.median(timings) * 1e6:5.1f} µs  "
            f"p99 {timings[int(len(timings) * 0.99)] * 1e6:5.1f} µs"
        )


if __name__ == "__main__":
    main()
