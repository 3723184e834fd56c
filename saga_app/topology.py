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

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from saga_app.connection import aiokafka_options
from saga_app.errors import ClusterMismatch
from saga_app.registry import SagaRegistry
from saga_app.service import Service
from saga_app.settings import Settings

_TOPIC_ALREADY_EXISTS = 36
_TOPIC_OWN_CONFIG = 1
"""DescribeConfigs' source of a setting made on the topic itself (DYNAMIC_TOPIC_CONFIG)."""

log = structlog.get_logger("saga.topology")

ORCHESTRATOR_APP = "saga-orchestrator"
"""The orchestrator workers' Faust app id (and consumer group), after the topic prefix."""
SAGA_TABLE = "sagas"


@dataclass(frozen=True)
class TopicPlan:
    """The topics one process needs: plain ones, and compacted table changelogs."""

    topics: tuple[str, ...]
    changelogs: tuple[str, ...]
    foreign: tuple[str, ...] = ()
    """Other services' topics it reads (a tracked saga's events): created if missing, with the
    saga partition count, but any count will do: the tracker re-keys what it reads."""
    expiring: tuple[str, ...] = ()
    """Changelogs among `changelogs` whose records are deleted `SAGA_RETENTION` after they
    were written, compacted until then (`answers_kept`; 0: compacted only). Kept so on
    existing topics too, as the retention changes (`expiry_config`)."""


def participant_group(names: Iterable[str]) -> str:
    """The Faust app id (and consumer group) of a process running these participants.

    Named after them, so two services never share a group, and two copies of one service do.
    """
    return "saga-participant-" + "-".join(sorted(names))


def service_group(names: Iterable[str]) -> str:
    """The Faust app id (and consumer group) of a process running these choreography services."""
    return "saga-service-" + "-".join(sorted(names))


def changelog(settings: Settings, role: str, table: str) -> str:
    """The changelog topic faust names for `table` of the app `role`."""
    return f"{settings.topic_prefix}{role}-{table}-changelog"


def worker_topics(settings: Settings, sagas: SagaRegistry) -> TopicPlan:
    """What an orchestrator worker running `sagas` reads and writes."""
    c = settings.catalog
    commands = map(c.commands, sagas.participants())
    return TopicPlan(
        topics=(c.requests, c.replies, c.events, c.dlq, c.outcomes, *commands),
        changelogs=(changelog(settings, ORCHESTRATOR_APP, SAGA_TABLE),),
        foreign=tuple(map(c.domain, sagas.domain_topics())),
    )


def participant_topics(settings: Settings, names: Iterable[str]) -> TopicPlan:
    """What a process running the participants `names` reads and writes."""
    c, names = settings.catalog, sorted(names)
    group = participant_group(names)
    tables = ["answered", *(f"{name}-records" for name in names)]
    return TopicPlan(
        topics=(c.replies, c.dlq, *map(c.commands, names)),
        changelogs=tuple(changelog(settings, group, table) for table in tables),
        expiring=(changelog(settings, group, "answered"),),
    )


def answers_kept(settings: Settings) -> int:
    """Seconds a participant keeps the reply to a command for its duplicates: `SAGA_RETENTION`,
    as long as the orchestrator keeps a finished saga (0: forever). A saga's commands are
    redelivered within seconds, and retried within its steps' timeouts."""
    return min(int(settings.retention), 2**31 - 1)  # RocksDB takes a 32-bit ttl


def expiry_config(settings: Settings) -> dict[str, str]:
    """The topic configs that make an expiring changelog keep what its store keeps."""
    kept = answers_kept(settings)
    if not kept:
        return {"cleanup.policy": "compact"}
    return {"cleanup.policy": "compact,delete", "retention.ms": str(kept * 1000)}


def service_topics(settings: Settings, services: Sequence[Service]) -> TopicPlan:
    """What a process running the choreography `services` reads and writes: its services'
    topics keyed by saga id with the saga partition count, so a saga's events, outcomes and
    records share a partition."""
    c = settings.catalog
    group = service_group(s.name for s in services)
    names = sorted({t for s in services for t in [*s.topics, s.publishes_to]})
    return TopicPlan(
        topics=(c.dlq, *map(c.domain, names)),
        changelogs=tuple(changelog(settings, group, f"{s.name}-records") for s in services),
    )


def replication_factor_for(settings: Settings, brokers: int) -> int:
    """`SAGA_REPLICATION_FACTOR`, or by default 3 on a cluster of 3 or more brokers, else 1."""
    if settings.replication_factor:
        return settings.replication_factor
    return 3 if brokers >= 3 else 1


def min_insync_replicas(replication_factor: int) -> int:
    """One replica may be down and writes with acks=all still succeed."""
    return max(replication_factor - 1, 1)


async def ensure_topics(settings: Settings, plan: TopicPlan) -> Settings:
    """Create the missing topics of `plan` and check the existing ones; returns the settings with
    the replication factor used, for the Faust app (the topics it creates itself get it too).

    Raises `ClusterMismatch` when a topic has another partition count than `SAGA_PARTITIONS`: its
    keys would hash to other partitions than the saga table's, so sagas would go astray.
    """
    admin = AIOKafkaAdminClient(**aiokafka_options(settings))
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        replicas = replication_factor_for(settings, brokers)
        if replicas > brokers:
            raise ClusterMismatch(
                f"SAGA_REPLICATION_FACTOR={replicas} but the cluster has {brokers} broker(s)"
            )
        plain = {"min.insync.replicas": str(min_insync_replicas(replicas))}
        compacted = {**plain, "cleanup.policy": "compact"}
        expiring = {**plain, **expiry_config(settings)}
        names = [*plan.topics, *plan.changelogs]
        response = await admin.create_topics(
            [
                NewTopic(n, settings.partitions, replicas, topic_configs=plain)
                for n in (*plan.topics, *plan.foreign)
            ]
            + [
                NewTopic(
                    n,
                    settings.partitions,
                    replicas,
                    topic_configs=expiring if n in plan.expiring else compacted,
                )
                for n in plan.changelogs
            ]
        )
        created = []
        for name, code, *rest in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != _TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"cannot create topic {name}: error {code} {rest}")
        if created:
            log.info("topics_created", count=len(created), replication_factor=replicas)
        check_partitions(settings, await _partition_counts(admin, names))
        await keep_expiring(admin, [n for n in plan.expiring if n not in created], settings)
        return replace(settings, replication_factor=replicas)
    finally:
        await admin.close()


async def keep_expiring(
    admin: AIOKafkaAdminClient, topics: list[str], settings: Settings
) -> list[str]:
    """Give existing `topics` today's `expiry_config`: created before expiry existed, or
    under another `SAGA_RETENTION`. Returns those it altered. Kafka's AlterConfigs replaces
    all of a topic's own settings, so the others (an operator's `segment.ms`) are sent along.
    A cluster that refuses (no ALTER_CONFIGS right) gets a warning saying what to set, and the
    process goes on: the changelog then keeps answers as its older settings say."""
    if not topics:
        return []
    wanted = expiry_config(settings)
    [described] = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
    )
    changes = []
    for resource in described.to_object()["resources"]:
        if resource["error_code"]:
            _not_altered(resource, wanted)
            continue
        own = {
            e["config_names"]: e["config_value"]
            for e in resource["config_entries"]
            if e.get("config_source") == _TOPIC_OWN_CONFIG
        }
        others = {k: v for k, v in own.items() if k not in ("cleanup.policy", "retention.ms")}
        if {**others, **wanted} != own:
            name = resource["resource_name"]
            changes.append(ConfigResource(ConfigResourceType.TOPIC, name, {**others, **wanted}))
    altered = []
    for response in await admin.alter_configs(changes) if changes else []:
        for result in response.to_object()["resources"]:
            if result["error_code"]:
                _not_altered(result, wanted)
            else:
                altered.append(result["resource_name"])
    if altered:
        log.info("topic_configs_altered", topics=altered, configs=wanted)
    return altered


def _not_altered(result: dict[str, Any], wanted: dict[str, str]) -> None:
    log.warning(
        "topic_configs_not_altered",
        topic=result["resource_name"],
        error=f"{result['error_code']} {result['error_message']}",
        action=f"set {wanted} on the topic (kafka-configs.sh --alter), or grant ALTER_CONFIGS",
    )


def check_partitions(settings: Settings, counts: dict[str, int]) -> None:
    """Raise `ClusterMismatch` naming the first topic whose partition count is not ours."""
    for name, count in sorted(counts.items()):
        if count != settings.partitions:
            raise ClusterMismatch(
                f"topic {name} has {count} partitions but SAGA_PARTITIONS is "
                f"{settings.partitions}: set SAGA_PARTITIONS={count}, or use another "
                f"SAGA_TOPIC_PREFIX (the partition count of existing sagas cannot change)"
            )


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partitions of each topic, asked until every topic shows up in the metadata."""
    deadline = time.monotonic() + 30
    while True:
        topics = await admin.describe_topics(names)
        counts = {t["topic"]: len(t["partitions"]) for t in topics if t["error_code"] == 0}
        if len(counts) == len(names) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.1)  # a topic just created can miss from metadata for a moment
