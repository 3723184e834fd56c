"""A small chaos run (`make chaos` is the full one): a few hundred sagas of all three example
types with mixed outcomes, through one fault of each kind on a private 3-broker cluster."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import local_kafka
import pytest

from benchmarks.chaos.run import ChaosConfig, format_figures, run_chaos


@pytest.mark.timeout(420)
def test_sagas_through_worker_broker_and_participant_kills_lose_nothing_and_apply_nothing_twice(
    kafka_factory: Callable[..., local_kafka.LocalKafka], tmp_path: Path
) -> None:
    """Kill -9 and restart of a worker, of the participants and of a broker, and a worker killed
    for good: every saga ends, as its participants' ledgers say and as `saga.events` announces,
    with no effect applied twice."""
    config = ChaosConfig(
        count=240, rate=10, faults="once", settle=90, workdir=tmp_path / "chaos", show=3
    )
    report = run_chaos(config, kafka=kafka_factory(nodes=3))
    figures = report.figures
    summary = f"{format_figures(report, config)}\n\n{report.problem_text(3)}"
    assert figures.terminal == figures.sagas == config.count, summary
    assert (figures.lost, figures.inconsistent, figures.duplicate_effects) == (0, 0, 0), summary
    assert figures.view_event_disagreements == 0, summary
