"""The example participants as one Faust application: an agent per participant's command topic.

Each agent: decode the command, answer a duplicate from the `answered` table, otherwise run the
participant's handler (which writes its records), store the reply, and send it to `reply_to`,
waiting for the broker's acknowledgement. Records and replies are keyed by saga, so every table
write lands on the partition of the command being handled (FAUST.md, points 1 and 2).

The examples keep in-memory aggregates (stock reserved, credit used) derived from their records,
so they run as one process; a real service would keep them in its own database.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from faust.web import Request, Response, View
from pydantic import ValidationError

from participants.experiments import experiments
from participants.inventory import inventory
from participants.metrics import metrics
from participants.notifications import notifications
from participants.orders import orders
from participants.payments import payments
from participants.resources import resources
from participants.runtime import Participant, Records, reply_to
from participants.workers import workers
from saga_app.kafka_io import FaustPublisher, make_faust_app, readiness
from saga_app.settings import Settings
from saga_app.topology import PARTICIPANTS_APP
from topics import MAX_MESSAGE_BYTES, Command, DeadLetter

log = structlog.get_logger("saga.participants")

PARTICIPANTS: tuple[Participant, ...] = (
    orders,
    inventory,
    payments,
    notifications,
    experiments,
    resources,
    metrics,
    workers,
)
NO_REPLY = b""
"""Stored for a command answered with silence (`simulate: timeout`): a redelivery stays silent."""


class ParticipantsWorker:
    """The Faust app running every example participant."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = settings.catalog
        self.app = make_faust_app(settings, PARTICIPANTS_APP)
        self.answered = self.app.Table(
            "answered", key_type=bytes, value_type=bytes, partitions=settings.partitions
        )
        self.publisher = FaustPublisher(self.app)
        self._loaded: set[str] = set()
        for participant in PARTICIPANTS:
            self._install(participant)
        self._install_health()

    def _install_health(self) -> None:
        app = self.app

        @app.page("/health")
        class Health(View):
            async def get(self, request: Request) -> Response:
                ready, reason = readiness(app)
                body = {"status": "ok" if ready else "unavailable", "reason": reason}
                return self.json(body, status=200 if ready else 503)

    def _install(self, participant: Participant) -> None:
        table = self.app.Table(
            f"{participant.name}-records",
            key_type=bytes,
            value_type=bytes,
            partitions=self.settings.partitions,
        )
        records = Records(table, participant.name)
        topic = self.app.topic(
            self.catalog.commands(participant.name),
            key_type=bytes,
            value_type=bytes,
            partitions=self.settings.partitions,
        )

        async def serve(stream: Any) -> None:
            async for event in stream.events():
                await self.handle(participant, records, event)

        self.app.agent(topic, name=f"serve_{participant.name}", concurrency=1)(serve)

    async def handle(self, participant: Participant, records: Records, event: Any) -> None:
        """Answer one command; a command we cannot read goes to the dead-letter topic."""
        if participant.name not in self._loaded and participant.on_load is not None:
            participant.on_load(records)  # state is recovered before agents see events
        self._loaded.add(participant.name)
        raw: bytes = event.value or b""
        try:
            if len(raw) > MAX_MESSAGE_BYTES:
                raise ValueError(f"command is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES} limit")
            command = Command.model_validate_json(raw)
        except (ValidationError, ValueError) as e:
            await self._dead_letter(event, f"invalid command: {e}")
            return
        key = command.message_id.encode()
        stored = self.answered.get(key)
        if stored is None:
            try:
                result = participant.handle(command, records)
            except Exception as e:  # a handler bug must not stop the agent: park it, no reply
                log.exception("handler_failed", saga_id=command.saga_id, step=command.step)
                await self._dead_letter(event, f"handler error: {type(e).__name__}: {e}")
                return
            stored = (
                NO_REPLY if result is None else reply_to(command, result).model_dump_json().encode()
            )
            self.answered[key] = stored
            log.info(
                "command_handled",
                participant=participant.name,
                saga_id=command.saga_id,
                step=command.step,
                kind=command.kind,
                attempt=command.attempt,
                outcome=None if result is None else result.outcome,
            )
        if stored != NO_REPLY:
            await self.publisher.send(command.reply_to, self.catalog.key(command.saga_id), stored)

    async def _dead_letter(self, event: Any, reason: str) -> None:
        message = event.message
        letter = DeadLetter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=None if event.key is None else bytes(event.key).decode(errors="replace"),
            value=bytes(event.value or b"").decode(errors="replace"),
            error=reason,
            at=time.time(),
        )
        log.warning("dead_lettered", topic=message.topic, offset=message.offset, reason=reason)
        await self.publisher.send(
            self.catalog.dlq, event.key or b"", letter.model_dump_json().encode()
        )
