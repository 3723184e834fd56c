"""Creates the saga topics up front, with the partition count of the saga table.

Declaring them before any worker starts means no topic is ever auto-created by the broker with its
own default partition count, which would silently break co-partitioning (FAUST.md, point 8).
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from saga_app.sagas import DEFINITIONS
from saga_app.settings import Settings

_TOPIC_ALREADY_EXISTS = 36


def participants() -> list[str]:
    """Every participant some saga definition sends commands to."""
    return sorted({step.participant for d in DEFINITIONS.values() for step in d.steps})


def saga_topics(settings: Settings) -> list[str]:
    """The names of every topic the orchestrator and the example participants use."""
    c = settings.catalog
    return [c.requests, c.replies, c.events, c.dlq, *(c.commands(p) for p in participants())]


async def ensure_topics(settings: Settings, replication_factor: int = 1) -> list[str]:
    """Create the missing saga topics; returns the ones this call created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        names = saga_topics(settings)
        response = await admin.create_topics(
            [NewTopic(n, settings.partitions, replication_factor) for n in names]
        )
        created = []
        for name, code, *rest in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != _TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"cannot create topic {name}: error {code} {rest}")
        return created
    finally:
        await admin.close()
