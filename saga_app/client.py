"""A small producer-side client: start, abort and re-drive sagas by producing to `saga.requests`,
and publish a domain event as a choreography's service would."""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer

from saga_app.connection import aiokafka_options
from saga_app.settings import Settings
from topics import AbortSaga, RetrySaga, StartSaga
from topics.messages import Message


class SagaClient:
    """What any service needs to drive sagas: one message to `saga.requests`, keyed by saga_id."""

    def __init__(self, settings: Settings) -> None:
        self.catalog = settings.catalog
        self._producer = AIOKafkaProducer(
            **aiokafka_options(settings), acks="all", enable_idempotence=True, linger_ms=5
        )

    async def __aenter__(self) -> SagaClient:
        await self._producer.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._producer.stop()

    async def _send(self, saga_id: str, message: Message) -> None:
        await self._producer.send_and_wait(
            self.catalog.requests, message.model_dump_json().encode(), key=self.catalog.key(saga_id)
        )

    async def start(self, saga_type: str, payload: dict[str, Any], *, saga_id: str) -> None:
        await self._send(saga_id, StartSaga(saga_id=saga_id, saga_type=saga_type, payload=payload))

    async def abort(self, saga_id: str, reason: str = "aborted by operator") -> None:
        await self._send(saga_id, AbortSaga(saga_id=saga_id, reason=reason))

    async def retry(self, saga_id: str) -> None:
        await self._send(saga_id, RetrySaga(saga_id=saga_id))

    async def publish(self, topic: str, event: dict[str, Any], *, key: str | None = None) -> None:
        """Publish a domain event on `topic` (as definitions name it), as a service would: how
        a tracked saga starts, since nobody orchestrates it."""
        await self._producer.send_and_wait(
            self.catalog.domain(topic),
            json.dumps(event).encode(),
            key=None if key is None else key.encode(),
        )
