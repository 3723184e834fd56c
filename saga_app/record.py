"""A consumed Kafka record, as the handlers see it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Record:
    """What a handler needs of a consumed Kafka record. The consumer's loop makes one per
    record fetched, straight from aiokafka's (no faust `ConsumerMessage`)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float
    """Seconds since the epoch; the engine's `now`, so replaying a record decides the same."""
