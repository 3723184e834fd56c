"""Runs participants as one Faust application: a handler per participant's command topic.

Each handler: decode the command, answer a duplicate from the `answered` table, otherwise run the
participant's handler (which writes its records), store the reply, and send it to `reply_to`.
Records and replies are keyed by saga, so every table write lands on the partition of the
command being handled (FAUST.md, points 1 and 2).

The `answered` table forgets a reply `SAGA_RETENTION` after it was stored, as the orchestrator
forgets a finished saga: its store drops it at a compaction, its changelog at a segment's
deletion (`participant_topics`). Without that it grew by every command ever handled.

`saga participant mypkg.payments:payments` runs yours; `saga participants` runs the examples.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from saga_app.kafka_io import FaustPublisher, install_metrics, make_faust_app, readiness
from saga_app.metrics import labelled
from saga_app.participant import Participant, Records, reply_to
from saga_app.record import Record
from saga_app.registry import load_named
from saga_app.settings import Settings
from saga_app.topology import answers_kept, participant_group
from topics import MAX_MESSAGE_BYTES, Command, DeadLetter

log = structlog.get_logger("saga.participants")

NO_REPLY = b""
"""Stored for a command answered with silence (`simulate: timeout`): a redelivery stays silent."""


def load_participants(specs: Sequence[str]) -> list[Participant]:
    """Resolve `module:attribute` specs to participants (an attribute may be a list of them)."""
    return load_named(specs, Participant, "mypkg.payments:payments")


def install_health(app: Any) -> None:
    """`GET /health`: 200 once the app holds partitions with its tables recovered, else 503."""

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            ready, reason = readiness(app)
            body = {"status": "ok" if ready else "unavailable", "reason": reason}
            return self.json(body, status=200 if ready else 503)


def dead_letter_of(message: Record, reason: str) -> bytes:
    """A dead-letter record for a consumed record nobody could process."""
    letter = DeadLetter(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=None if message.key is None else message.key.decode(errors="replace"),
        value=(message.value or b"").decode(errors="replace"),
        error=reason,
        at=time.time(),
    )
    return letter.model_dump_json().encode()


class ParticipantMetrics:
    """What the participant runtime counts, on an injected registry (as `SagaMetrics` does)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.commands = Counter(
            "saga_participant_commands",
            "Commands and compensations answered (outcome duplicate: answered from the store)",
            ["participant", "kind", "outcome"],
            registry=registry,
        )
        self.commands_by = labelled(self.commands)
        self.dead_letters = Counter(
            "saga_participant_dead_letters",
            "Commands a participant could not read or whose handler raised",
            ["participant"],
            registry=registry,
        )


class ParticipantWorker:
    """The Faust app running some participants; its consumer group is named after them.

    `simulate` turns the `simulate` hooks of DESIGN.md on (demos and tests only): a payload can
    then make a step fail, hang or be flaky. Off, the hooks are ignored.
    """

    def __init__(
        self,
        settings: Settings,
        participants: Sequence[Participant],
        *,
        simulate: bool = False,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.simulate = simulate
        self.catalog = settings.catalog
        self.participants = list(participants)
        self.app = make_faust_app(settings, participant_group(p.name for p in participants))
        self.answered = self.app.Table(
            "answered",
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            options={"ttl": answers_kept(settings)},
        )
        self.publisher = FaustPublisher(self.app)
        self._loaded: set[str] = set()
        for participant in self.participants:
            self._install(participant)
        install_health(self.app)
        self.metrics = ParticipantMetrics(registry or CollectorRegistry())
        install_metrics(self.app, self.metrics.registry)

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

        async def serve(message: Record) -> None:
            await self.handle(participant, records, message)

        self.app.consume(topic, serve)

    async def handle(self, participant: Participant, records: Records, message: Record) -> None:
        """Answer one command; a command we cannot read goes to the dead-letter topic."""
        if participant.name not in self._loaded and participant.on_load is not None:
            participant.on_load(records)  # state is recovered before any command is handled
        self._loaded.add(participant.name)
        raw: bytes = message.value or b""
        try:
            if len(raw) > MAX_MESSAGE_BYTES:
                raise ValueError(f"command is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES} limit")
            command = Command.model_validate_json(raw)
        except (ValidationError, ValueError) as e:
            await self._dead_letter(participant, message, f"invalid command: {e}")
            return
        key = command.message_id.encode()
        stored = self.answered.get(key)
        if stored is not None:
            self.metrics.commands_by(participant.name, command.kind, "duplicate").inc()
        else:
            try:
                result = participant.handle(command, records, simulate=self.simulate)
            except Exception as e:  # a handler bug must not stop the agent: park it, no reply
                log.exception("handler_failed", saga_id=command.saga_id, step=command.step)
                await self._dead_letter(
                    participant, message, f"handler error: {type(e).__name__}: {e}"
                )
                return
            outcome = "silent" if result is None else result.outcome
            self.metrics.commands_by(participant.name, command.kind, outcome).inc()
            stored = (
                NO_REPLY if result is None else reply_to(command, result).model_dump_json().encode()
            )
            self.answered[key] = stored
            routine = command.kind == "command" and outcome == "success"
            (log.debug if routine else log.info)(  # at info: what did not go to plan
                "command_handled",
                participant=participant.name,
                saga_id=command.saga_id,
                step=command.step,
                kind=command.kind,
                attempt=command.attempt,
                outcome=outcome,
            )
        if stored != NO_REPLY:
            await self.publisher.send(command.reply_to, self.catalog.key(command.saga_id), stored)

    async def _dead_letter(self, participant: Participant, message: Record, reason: str) -> None:
        self.metrics.dead_letters.labels(participant.name).inc()
        log.warning("dead_lettered", topic=message.topic, offset=message.offset, reason=reason)
        await self.publisher.send(
            self.catalog.dlq, message.key or b"", dead_letter_of(message, reason)
        )
