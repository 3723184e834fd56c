"""The ceiling benchmark's measure of the participants' logic (`make bench-ceiling`), without a
broker."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.bench_orchestrator import run
from benchmarks.ceiling import answer_cost


def commands_of(sagas: int) -> list[tuple[str, bytes]]:
    commands: list[tuple[str, bytes]] = []
    asyncio.run(run(sagas, commands))
    return commands


def test_the_commands_of_a_run_are_answered_by_the_example_participants() -> None:
    commands = commands_of(3)

    assert len(commands) == 3 * 4  # create_order: four steps, each answered with success
    assert all(topic.endswith(".commands") for topic, _ in commands)
    assert asyncio.run(answer_cost(commands)) > 0


def test_a_command_left_unanswered_spoils_the_measure() -> None:
    topic, _ = commands_of(1)[0]

    with pytest.raises(RuntimeError, match="1 of 1 commands unanswered"):
        asyncio.run(answer_cost([(topic, b"not json")]))
