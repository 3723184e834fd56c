"""The floor's traffic shapes (`make bench-e2e --contract`), without a broker."""

from __future__ import annotations

import json
import time

from benchmarks.floor import BARE, CONTRACT, STEPS, burn, events_after, padded


def test_the_contract_carries_the_records_the_product_writes_per_saga() -> None:
    # start, 4 commands, 4 replies, 5 states, 10 events, 2 participant records per command
    assert CONTRACT.messages_per_saga == 1 + 4 + 4 + 5 + 10 + 8
    assert BARE.messages_per_saga == 1 + 4 + 4 + 5


def test_a_padded_record_is_json_of_the_size_asked_for() -> None:
    raw = padded({"saga_id": "s1", "step": 2}, CONTRACT.state)

    assert len(raw) == CONTRACT.state
    assert json.loads(raw)["step"] == 2
    assert padded({"saga_id": "s1"}, 0) == b'{"saga_id": "s1"}'


def test_each_event_handled_publishes_two_events_and_the_last_completes_the_saga() -> None:
    per_step = [events_after(step) for step in range(STEPS + 1)]

    assert per_step[0] == ["saga_started", "step_started"]
    assert per_step[1:STEPS] == [["step_succeeded", "step_started"]] * (STEPS - 1)
    assert per_step[STEPS] == ["step_succeeded", "saga_completed"]


def test_burn_keeps_the_thread_on_the_cpu_as_long_as_asked() -> None:
    began = time.thread_time()
    burn(3000)

    assert time.thread_time() - began >= 0.003
