"""Faust's consumer on the app's own loop: no thread of its own, every call a plain await, and
a stop that returns without a thread to wait for."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from faust.types import TP

from saga_app.in_loop_consumer import InLoopConsumerThread
from saga_app.kafka_io import make_faust_app
from saga_app.settings import Settings

TP0 = TP("t.saga.replies", 0)


class FakeAiokafka:
    """aiokafka's consumer as the thread service starts, calls and stops it."""

    def __init__(self) -> None:
        self.started_on: asyncio.AbstractEventLoop | None = None
        self.stopped = False

    async def start(self) -> None:
        self.started_on = asyncio.get_running_loop()

    async def stop(self) -> None:
        self.stopped = True

    async def position(self, tp: TP) -> tuple[asyncio.AbstractEventLoop, int]:
        return asyncio.get_running_loop(), threading.get_ident()


def consumer_thread(tmp_path: Path) -> tuple[InLoopConsumerThread, FakeAiokafka]:
    app = make_faust_app(Settings(data_dir=tmp_path), "in-loop-test")
    thread = app.consumer._thread
    assert isinstance(thread, InLoopConsumerThread)
    aiokafka = FakeAiokafka()
    thread._create_consumer = lambda loop: aiokafka  # type: ignore[method-assign,assignment,return-value]
    return thread, aiokafka


async def test_the_consumer_starts_runs_and_stops_on_the_apps_loop(tmp_path: Path) -> None:
    thread, aiokafka = consumer_thread(tmp_path)
    loop, threads = asyncio.get_running_loop(), threading.active_count()
    await asyncio.wait_for(thread.start(), 5)
    assert aiokafka.started_on is loop
    assert threading.active_count() == threads  # no thread started
    assert await thread.position(TP0) == (loop, threading.get_ident())
    await asyncio.wait_for(thread.stop(), 5)  # nothing to wait for: it returns
    assert aiokafka.stopped
    assert thread.should_stop


async def test_rebalance_callbacks_reach_the_consumer_directly(tmp_path: Path) -> None:
    thread, _ = consumer_thread(tmp_path)
    calls: list[tuple[str, set[TP]]] = []

    async def revoked(tps: set[TP]) -> None:
        calls.append(("revoked", tps))

    async def assigned(tps: set[TP], generation_id: int = 0) -> None:
        calls.append(("assigned", tps))

    thread.consumer.on_partitions_revoked = revoked  # type: ignore[method-assign]
    thread.consumer.on_partitions_assigned = assigned  # type: ignore[method-assign]
    # No method queue runs to carry them across (faust's thread would wait for one forever).
    await asyncio.wait_for(thread.on_partitions_revoked({TP0}), 5)
    await asyncio.wait_for(thread.on_partitions_assigned({TP0}, 3), 5)
    assert calls == [("revoked", {TP0}), ("assigned", {TP0})]
