"""`make bench-hops`' analysis, without a broker: each hop from the records' own timestamps."""

from __future__ import annotations

from benchmarks.hops import PREFIX, hops

REQUESTS, REPLIES, EVENTS = (f"{PREFIX}saga.{name}" for name in ("requests", "replies", "events"))
STATE = f"{PREFIX}saga-orchestrator-sagas-changelog"
ANSWERED = f"{PREFIX}saga-participant-orders-answered-changelog"


def saga(saga_id: str, start: float, replies: int = 4) -> list[tuple[str, float, str]]:
    """A saga's records: each worker hop takes 3 ms to its state and 1 ms to its output, each
    participant hop 4 ms to its answer and 2 ms to its reply."""
    records = [(REQUESTS, start, saga_id)]
    at = start
    for step in range(replies):
        at += 0.003
        records.append((STATE, at, saga_id))
        at += 0.001
        records += [(f"{PREFIX}p{step}.commands", at, saga_id), (EVENTS, at, saga_id)]
        at += 0.004
        records.append((ANSWERED, at, saga_id))
        at += 0.002
        records.append((REPLIES, at, saga_id))
    records += [(STATE, at + 0.003, saga_id), (EVENTS, at + 0.004, saga_id)]
    return records


def test_each_hop_is_measured_from_the_records_that_bound_it() -> None:
    found = hops(saga("s-1", 100.0), {"s-1"})

    assert [round(d, 3) for d in found["worker, input -> state"]] == [3.0] * 5
    assert [round(d, 3) for d in found["worker, state -> output"]] == [1.0] * 5
    assert [round(d, 3) for d in found["participant, command -> state"]] == [4.0] * 4
    assert [round(d, 3) for d in found["participant, state -> reply"]] == [2.0] * 4
    assert [round(d, 3) for d in found["saga, start -> last event"]] == [44.0]


def test_sagas_off_the_plain_path_and_sagas_not_asked_for_are_left_out() -> None:
    retried = saga("s-2", 200.0)
    retried.append((f"{PREFIX}p0.commands", 200.5, "s-2"))  # a second attempt of a step
    records = saga("s-1", 100.0) + retried + saga("s-3", 300.0)

    found = hops(records, {"s-1", "s-2"})

    assert len(found["saga, start -> last event"]) == 1  # s-2 retried, s-3 is not asked for
    assert len(found["worker, input -> state"]) == 5
