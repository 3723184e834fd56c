"""What an offset commit waits for: every message sent while the records it covers were processed.

Faust flushes the producer before committing, but that flush neither waits for the table's
changelog records still in its buffer nor raises when a delivery failed for good (FAUST.md, the
commit path). So every send — outputs and changelog records alike — is tracked here, and the
producer's flush ends with `settle()`: it returns once all of them are acknowledged and raises
once any of them failed. A raise stops the commit and the worker; after a restart the
uncommitted records are read again and their outputs sent again (the engine makes that safe).

Waiting for everything sent so far, rather than for what each offset produced, is simpler and
never commits too early: a record is acknowledged only after its sends were handed over here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import structlog

log = structlog.get_logger("saga.deliveries")


class DeliveryFailed(Exception):
    """A message the broker never acknowledged: committing past its source would lose it."""


class PendingDeliveries:
    """The sends not yet acknowledged, and the first that failed for good (failure is sticky)."""

    def __init__(self, timeout: float = 120.0) -> None:
        self.timeout = timeout
        """Seconds a flush waits for acknowledgements before it declares them failed."""
        self._pending: set[asyncio.Future[Any]] = set()
        self.failure: DeliveryFailed | None = None
        """The first delivery that failed; from then on every flush raises it."""
        self.failures = 0
        """Deliveries that failed for good, for `/health`."""

    def __len__(self) -> int:
        return len(self._pending)

    def track(self, delivery: Awaitable[Any], what: str) -> None:
        """Follow one send's future (`what` names it in the error) until the broker answers."""
        future = asyncio.ensure_future(delivery)
        if future.done():
            self._settled(future, what)
            return
        self._pending.add(future)
        future.add_done_callback(lambda done: self._settled(done, what))

    def _settled(self, future: asyncio.Future[Any], what: str) -> None:
        self._pending.discard(future)
        if future.cancelled():
            error: BaseException | None = asyncio.CancelledError("the send was cancelled")
        else:
            error = future.exception()
        if error is None:
            return
        self.failures += 1
        log.error("delivery_failed", message=what, error=repr(error))
        if self.failure is None:
            self.failure = DeliveryFailed(f"{what} was not delivered: {error!r}")

    async def settle(self) -> None:
        """Return once every send tracked so far is acknowledged; raise if any failed for good."""
        pending = list(self._pending)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.timeout)
            if late and self.failure is None:
                self.failure = DeliveryFailed(
                    f"{len(late)} messages not acknowledged within {self.timeout:.0f}s"
                )
        if self.failure is not None:
            raise self.failure
