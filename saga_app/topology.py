"""Creates every topic up front, the table changelogs included, with one partition count.

Declaring them before any worker starts means no topic is auto-created by the broker with its own
default partition count, which would silently break co-partitioning (FAUST.md, point 8). And a
changelog that faust creates itself at start-up is missing from its consumer's metadata for a
moment: the first table write then fails with PartitionsMismatch ("0 partitions"), which lost
the very first saga on a fresh broker.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from saga_app.sagas import DEFINITIONS
from saga_app.settings import Settings

_TOPIC_ALREADY_EXISTS = 36


def participants() -> list[str]:
    """Every participant some saga definition sends commands to."""
    return sorted({step.participant for d in DEFINITIONS.values() for step in d.steps})


ORCHESTRATOR_APP = "saga-orchestrator"
"""The orchestrator workers' Faust app id (and consumer group), after the topic prefix."""
PARTICIPANTS_APP = "saga-participants"
SAGA_TABLE = "sagas"


def participant_tables() -> list[str]:
    """The tables of the example participants: the replies they gave and each one's records."""
    return ["answered", *(f"{p}-records" for p in participants())]


def changelog(settings: Settings, role: str, table: str) -> str:
    """The changelog topic faust names for `table` of the app `role`."""
    return f"{settings.topic_prefix}{role}-{table}-changelog"


def saga_topics(settings: Settings) -> list[str]:
    """The names of every topic the orchestrator and the example participants use."""
    c = settings.catalog
    return [c.requests, c.replies, c.events, c.dlq, *(c.commands(p) for p in participants())]


def changelog_topics(settings: Settings) -> list[str]:
    return [
        changelog(settings, ORCHESTRATOR_APP, SAGA_TABLE),
        *(changelog(settings, PARTICIPANTS_APP, t) for t in participant_tables()),
    ]


async def ensure_topics(settings: Settings, replication_factor: int = 1) -> list[str]:
    """Create the missing saga topics; returns the ones this call created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        compacted = {"cleanup.policy": "compact"}
        response = await admin.create_topics(
            [NewTopic(n, settings.partitions, replication_factor) for n in saga_topics(settings)]
            + [
                NewTopic(n, settings.partitions, replication_factor, topic_configs=compacted)
                for n in changelog_topics(settings)
            ]
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
