"""Outputs leave only once the saga state they follow from is in the changelog.

A worker that sent a command and died before the saga's new state reached the changelog left a
successor that never knew of it. Replaying the inputs does not always bring it back: replies and
timeouts come from two topics, and read in another order they decide otherwise (the step that
took effect times out instead, and it is never compensated). Holding outputs until their state
is acknowledged closes that window: whatever left the worker, the next owner knows of.

Outputs leave in the order they were decided, so a saga's events and commands keep their order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger("saga.outbox")

Message = tuple[str, bytes, bytes]
"""(topic, key, value)."""


class StateNotStored(Exception):
    """The changelog record the held messages waited for was not written: they never leave."""


@dataclass(eq=False)
class _Held:
    partition: int
    stored: asyncio.Future[Any]
    messages: Sequence[Message]
    released: asyncio.Future[None] = field(default_factory=asyncio.Future)
    dropped: bool = False


class Outbox:
    """Holds each batch of outputs until its state's changelog record is acknowledged.

    `send` hands a message to the producer and returns its delivery (or None: sent for good);
    `track` (the commit's `PendingDeliveries.track`) follows each batch until the broker
    acknowledged all of it, so an offset is committed only after its outputs were written.
    """

    def __init__(
        self,
        send: Callable[[str, bytes, bytes], Awaitable[Awaitable[Any] | None]],
        track: Callable[[Awaitable[Any], str], None] | None = None,
    ) -> None:
        self._send = send
        self._track = track
        self._held: deque[_Held] = deque()
        self._releasing: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._held)

    async def send_after(
        self, stored: Awaitable[Any] | None, partition: int, messages: Sequence[Message]
    ) -> None:
        """Send `messages` once `stored` (the state's changelog delivery) is acknowledged;
        at once if it is None (a store that is durable when written, as in tests)."""
        if not messages:
            return
        if stored is None and not self._held:
            for message in messages:
                await self._send(*message)
            return
        held = _Held(partition, asyncio.ensure_future(stored or _done()), messages)
        if self._track is not None:
            self._track(held.released, f"{len(messages)} messages held for a saga state")
        self._held.append(held)
        if self._releasing is None or self._releasing.done():
            self._releasing = asyncio.ensure_future(self._release())

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions are being revoked: their held messages never leave from here. Were their
        states stored, the next owner reads them and re-sends what is outstanding; were they
        not, it never learns of them, and nothing may have left that it does not know of."""
        gone = set(partitions)
        dropped = 0
        for held in self._held:
            if held.partition in gone and not held.dropped:
                held.dropped = True
                _resolve(held.released)
                dropped += 1
        if dropped:
            log.info("outputs_dropped_on_revoke", batches=dropped, partitions=sorted(gone))

    async def _release(self) -> None:
        """Send the held batches in order, each once its state is stored; end when none wait."""
        while self._held:
            held = self._held[0]
            if not held.dropped:
                await asyncio.wait([held.stored])
            self._held.popleft()
            if held.dropped:
                continue
            if held.stored.cancelled() or held.stored.exception() is not None:
                error = "cancelled" if held.stored.cancelled() else repr(held.stored.exception())
                _fail(held.released, StateNotStored(error))
                continue
            try:
                sent = [await self._send(*message) for message in held.messages]
            except Exception as e:
                _fail(held.released, e)
                continue
            _release_when_acknowledged(held.released, [s for s in sent if s is not None])


def _release_when_acknowledged(
    released: asyncio.Future[None], deliveries: list[Awaitable[Any]]
) -> None:
    """`released` ends with the deliveries: the commit waiting for it waits for their acks."""
    if not deliveries:
        _resolve(released)
        return

    def settle(acks: asyncio.Future[Any]) -> None:
        error = None if acks.cancelled() else acks.exception()
        if error is None:  # a cancelled send fails on its own in the producer's tracking
            _resolve(released)
        else:
            _fail(released, error)

    asyncio.gather(*deliveries).add_done_callback(settle)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[None], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
