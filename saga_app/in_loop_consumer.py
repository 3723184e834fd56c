"""Faust's aiokafka consumer on the app's own event loop, not in a thread of its own.

Faust runs aiokafka's consumer in a thread with a second event loop and hands every call
across through method queues. With the worker reading in rounds (`kafka_io._SagaConsumer`),
that bought nothing and cost a lot: at 250 sagas/s the worker made ~1,400 futex calls a
second handing the GIL between its two threads and the participants ~1,800 (`strace -c`),
plus a self-pipe wake-up each way for every fetch. Here every call is a plain `await`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from mode import Service
from mode.utils.futures import maybe_async


class InLoopConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer "thread" as a plain service on the app's loop: started, called, stopped.

    Heartbeats share that loop with the records now: no step may hold it for the session
    timeout (`kafka_io.SESSION_TIMEOUT`, 6 s). The longest, indexing a takeover of a million
    sagas, holds it under 2 s at a time.
    """

    wait_for_shutdown = False  # no thread to wait for

    def __init__(self, consumer: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(consumer, loop=loop, thread_loop=loop, **kwargs)

    async def start(self) -> None:
        self._thread_started.set()  # what a thread's start marks, for `maybe_start`
        await Service.start(self)

    async def on_stop(self) -> None:
        await self.on_thread_stop()  # stops aiokafka's consumer, as the thread did on its way out

    # mode's thread service leaves these to its thread on the way out; here the service does them
    async def _stop_children(self) -> None:
        await self._default_stop_children()

    async def _stop_futures(self) -> None:
        await self._default_stop_futures()

    async def _stop_exit_stacks(self) -> None:
        await self._default_stop_exit_stacks()

    def _stopped_set(self) -> None:
        self._stopped.set()

    def set_shutdown(self) -> None:
        self._shutdown.set()

    async def call_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await maybe_async(fun(*args, **kwargs))

    async def cast_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.add_future(maybe_async(fun(*args, **kwargs)))

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await self.consumer.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        await self.consumer.on_partitions_assigned(assigned, generation_id)
