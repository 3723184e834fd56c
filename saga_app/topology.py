"""Creates every topic up front, the table changelogs included, with one partition count.

Declaring them before any worker starts means no topic is auto-created by the broker with its own
default partition count, which would silently break co-partitioning (FAUST.md, point 8). And a
changelog that faust creates itself at start-up is missing from its consumer's metadata for a
moment: the first table write then fails with PartitionsMismatch ("0 partitions"), which lost
the very first saga on a fresh broker.

Each process creates what it uses: a worker the saga topics and the command topics of the
participants its loaded sagas name; a participant process its command topics and its tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from saga_app.registry import SagaRegistry
from saga_app.settings import Settings

_TOPIC_ALREADY_EXISTS = 36

ORCHESTRATOR_APP = "saga-orchestrator"
"""The orchestrator workers' Faust app id (and consumer group), after the topic prefix."""
SAGA_TABLE = "sagas"


@dataclass(frozen=True)
class TopicPlan:
    """The topics one process needs: plain ones, and compacted table changelogs."""

    topics: tuple[str, ...]
    changelogs: tuple[str, ...]


def participant_group(names: Iterable[str]) -> str:
    """The Faust app id (and consumer group) of a process running these participants.

    Named after them, so two services never share a group, and two copies of one service do.
    """
    return "saga-participant-" + "-".join(sorted(names))


def changelog(settings: Settings, role: str, table: str) -> str:
    """The changelog topic faust names for `table` of the app `role`."""
    return f"{settings.topic_prefix}{role}-{table}-changelog"


def worker_topics(settings: Settings, sagas: SagaRegistry) -> TopicPlan:
    """What an orchestrator worker running `sagas` reads and writes."""
    c = settings.catalog
    return TopicPlan(
        topics=(c.requests, c.replies, c.events, c.dlq, *map(c.commands, sagas.participants())),
        changelogs=(changelog(settings, ORCHESTRATOR_APP, SAGA_TABLE),),
    )


def participant_topics(settings: Settings, names: Iterable[str]) -> TopicPlan:
    """What a process running the participants `names` reads and writes."""
    c, names = settings.catalog, sorted(names)
    group = participant_group(names)
    tables = ["answered", *(f"{name}-records" for name in names)]
    return TopicPlan(
        topics=(c.replies, c.dlq, *map(c.commands, names)),
        changelogs=tuple(changelog(settings, group, table) for table in tables),
    )


async def ensure_topics(
    settings: Settings, plan: TopicPlan, replication_factor: int = 1
) -> list[str]:
    """Create the missing topics of `plan`; returns the ones this call created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        compacted = {"cleanup.policy": "compact"}
        response = await admin.create_topics(
            [NewTopic(n, settings.partitions, replication_factor) for n in plan.topics]
            + [
                NewTopic(n, settings.partitions, replication_factor, topic_configs=compacted)
                for n in plan.changelogs
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
