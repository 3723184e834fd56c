"""A running saga system for integration tests: real worker and participant processes on the
real broker, driven only through Kafka topics and the web views, as a user would."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from services import READY_TIMEOUT, Service, http_json

from saga_app.client import SagaClient
from saga_app.connection import aiokafka_options
from saga_app.registry import EXAMPLES, load_sagas
from saga_app.settings import Settings
from saga_app.topology import ORCHESTRATOR_APP, ensure_topics, worker_topics
from topics import StartSaga

FINISHED = frozenset({"completed", "compensated", "failed"})
HELD = "tests.integration.held_sagas"
"""The module of `held_order` (a create_order that waits an hour at reserve_stock), for
`SagaSystem(..., sagas=[EXAMPLES, HELD])`."""


WARM_UP = {
    "create_order": {
        "customer_id": "warm-up",
        "items": [{"sku": "warm-up", "qty": 1}],
        "amount": 1.0,
    },
    "create_experiment": {"user_id": "warm-up", "name": "warm-up", "resources": {"gpus": 1}},
    "create_run": {"experiment_id": "warm-up", "config": {}, "resources": 1},
}
"""One saga of each example type, between them commanding every example participant."""

T = TypeVar("T")


def eventually(read: Callable[[], T], ok: Callable[[T], bool], what: str, timeout: float = 30) -> T:
    """Call `read` until `ok` accepts what it returns; fail at the deadline with `what` and the
    last value. For counts and views that other processes update a moment after the saga moves."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"{what}: not so after {timeout:g}s, last: {value!r}"
        time.sleep(0.2)  # polling interval


async def topic_configs(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's configs as the broker describes them, by name."""
    [response] = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
    )
    return {
        r["resource_name"]: {e["config_names"]: e["config_value"] for e in r["config_entries"]}
        for r in response.to_object()["resources"]
    }


async def described(
    admin: AIOKafkaAdminClient,
    topic: str,
    ok: Callable[[dict[str, str]], bool],
    timeout: float = 30,
) -> dict[str, str]:
    """`topic`'s configs once `ok` accepts them. A KRaft broker acknowledges an alteration when
    its controller has taken it, and describes it once its own metadata has caught up: a moment
    later, more under load (CI once saw the old configs right after the acknowledgement)."""
    deadline = time.monotonic() + timeout
    while not ok(config := (await topic_configs(admin, [topic]))[topic]):
        assert time.monotonic() < deadline, f"{topic}: configs not so after {timeout:g}s: {config}"
        await asyncio.sleep(0.1)  # polling interval
    return config


class Deadline:
    """One deadline for a test's successive waits, each given what is left of it: their sum stays
    under the test's pytest timeout, so a slow run fails at the wait that was slow, saying which,
    instead of being killed by pytest-timeout with a stack dump."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self, what: str) -> float:
        """Seconds left for `what`; fails at once, naming it, when none are."""
        left = self.at - time.monotonic()
        assert left > 0, f"{what}: out of time ({self.seconds:.0f}s were left for these waits)"
        return left


def assert_compensated_by_abort(saga: dict[str, Any], reason: str) -> None:
    """The saga ended `compensated` because an abort with `reason` was applied: the engine
    recorded one `saga_aborted` with the reason, the saga's error carries it, and no step timed
    out (so the saga did not roll back by itself)."""
    history = [(h["event"], h.get("error")) for h in saga["history"]]
    assert saga["status"] == "compensated", history
    aborted = [error for event, error in history if event == "saga_aborted"]
    assert len(aborted) == 1 and reason in (aborted[0] or ""), history
    assert reason in (saga["error"] or ""), saga["error"]
    assert not [event for event, _ in history if event == "step_timed_out"], history


async def orchestrator_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The orchestrator group's committed offsets of `topic`, by partition."""
    admin = AIOKafkaAdminClient(**aiokafka_options(settings))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(
            f"{settings.topic_prefix}{ORCHESTRATOR_APP}"
        )
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


class SagaSystem:
    """Workers and participants under one topic prefix, so tests never see each other's sagas."""

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        prefix: str,
        partitions: int = 4,
        workers: int = 1,
        env: dict[str, str] | None = None,
        web_token: str | None = None,
        web_read_token: str | None = None,
        sagas: list[str] | None = None,
        services: bool = False,
    ) -> None:
        """`env` adds `SAGA_*` variables for every process and client, e.g. a secure broker's
        `LocalKafka.client_env()`. `web_token`/`web_read_token` set the workers'
        SAGA_WEB_TOKEN/SAGA_WEB_READ_TOKEN (None: whatever this process's environment says).
        `sagas` are the modules the workers run (SAGA_SAGAS; None: the example sagas).
        `services` adds a process running the example choreography services."""
        self.saga_modules = sagas or [EXAMPLES]
        self.env = {
            "SAGA_BOOTSTRAP_SERVERS": bootstrap,
            "SAGA_TOPIC_PREFIX": prefix,
            "SAGA_PARTITIONS": str(partitions),
            **(env or {}),
        }
        if sagas:
            self.env["SAGA_SAGAS"] = ",".join(sagas)
        if web_token is not None:
            self.env["SAGA_WEB_TOKEN"] = web_token
        if web_read_token is not None:
            self.env["SAGA_WEB_READ_TOKEN"] = web_read_token
        self.settings = Settings.from_env({**os.environ, **self.env})
        self.catalog = self.settings.catalog
        self.workdir = workdir
        self.participants = Service("participants", self.env, workdir)
        self.services = [Service("services", self.env, workdir)] if services else []
        self.workers = [
            Service("worker", self.env, workdir, name=f"worker-{i}") for i in range(workers)
        ]

    def start(self, timeout: float = READY_TIMEOUT) -> SagaSystem:
        """Create the topics, start every process and wait until all are ready, within `timeout`."""
        deadline = Deadline(timeout)
        topics = worker_topics(self.settings, load_sagas(self.saga_modules))
        asyncio.run(ensure_topics(self.settings, topics))
        for service in [self.participants, *self.services, *self.workers]:
            service.start()
        for service in [self.participants, *self.services, *self.workers]:
            service.wait_ready(deadline.left(f"{service.name} ready"))
        # A worker ready before the last one joined the group is in that join's rebalance now
        # (a few hundred ms of 503): once every worker has answered, wait for all of them again.
        for worker in self.workers[:-1]:
            worker.wait_ready(deadline.left(f"{worker.name} ready after the last one joined"))
        return self

    def warm_up(self, timeout: float = 60.0) -> None:
        """Run one saga of each example type to its end, whatever the end, before the tests.

        A system that has just answered /health may still be settling its consumer groups: on a
        loaded machine the participants app was seen evicted from its group (a startup stall
        past the 6 s session) and rejoining, which held the first command 3.5 s, past the
        examples' 3 s step timeout. Tests that count attempts start after that has passed.
        """
        sagas = [
            (saga_type, payload, f"warm-up-{saga_type}-{uuid.uuid4().hex[:8]}")
            for saga_type, payload in WARM_UP.items()
        ]
        deadline = Deadline(timeout)
        for saga_id in self.start_sagas(sagas):
            self.wait_for(saga_id, timeout=deadline.left(f"warm-up saga {saga_id}"))

    def stop(self) -> None:
        for service in [*self.workers, *self.services, self.participants]:
            service.stop()

    @property
    def read_token(self) -> str:
        """The token the workers accept for reads ("" when reads are open)."""
        return self.settings.web_read_token or self.settings.web_token

    @property
    def write_token(self) -> str:
        return self.settings.web_token

    @property
    def url(self) -> str:
        return self.workers[0].url

    def wait_until_workers_share_partitions(self, timeout: float = 60) -> list[set[int]]:
        """Workers started together rebalance; wait until each holds part of the partitions."""
        deadline = time.monotonic() + timeout
        owned: list[Any] = []
        while time.monotonic() < deadline:
            owned = [http_json("GET", f"{w.url}/health")[1] for w in self.workers]
            if all(isinstance(o, dict) and o.get("partitions") for o in owned):
                return [set(o["partitions"]) for o in owned]
            time.sleep(0.2)  # polling interval
        raise AssertionError(f"workers did not split the partitions: {owned}")

    def ids_on_every_partition(self, label: str, per_partition: int = 1) -> list[str]:
        """Fresh saga ids, `per_partition` on each partition, in partition order: random ids
        all land on one worker's partitions now and then (8 ids, 2 workers: 1 run in 128)."""
        ids: list[list[str]] = [[] for _ in range(self.settings.partitions)]
        while any(len(on) < per_partition for on in ids):
            saga_id = f"{label}-{uuid.uuid4().hex[:8]}"
            on = ids[self.catalog.partition_of(saga_id)]
            if len(on) < per_partition:
                on.append(saga_id)
        return [saga_id for on in ids for saga_id in on]

    # --- driving sagas -------------------------------------------------------------------------

    def start_saga(self, saga_type: str, payload: dict[str, Any], saga_id: str) -> str:
        self.start_sagas([(saga_type, payload, saga_id)])
        return saga_id

    def start_sagas(self, sagas: list[tuple[str, dict[str, Any], str]]) -> list[str]:
        """Start several sagas at once, through one producer: (saga_type, payload, saga_id)."""

        async def send() -> None:
            async with SagaClient(self.settings) as client:
                for saga_type, payload, saga_id in sagas:
                    await client.start(saga_type, payload, saga_id=saga_id)

        asyncio.run(send())
        return [saga_id for _, _, saga_id in sagas]

    def start_in_transactions(
        self, transactions: list[list[tuple[str, dict[str, Any], str]]]
    ) -> None:
        """Start sagas the way a transactional producer (an outbox relay, Kafka Streams) does:
        each inner list in one committed transaction, so commit markers sit between them."""

        async def send() -> None:
            producer = AIOKafkaProducer(
                **aiokafka_options(self.settings), transactional_id=f"starter-{uuid.uuid4().hex}"
            )
            await producer.start()
            try:
                for sagas in transactions:
                    async with producer.transaction():
                        for saga_type, payload, saga_id in sagas:
                            start = StartSaga(saga_id=saga_id, saga_type=saga_type, payload=payload)
                            await producer.send(
                                self.catalog.requests,
                                start.model_dump_json().encode(),
                                key=self.catalog.key(saga_id),
                            )
            finally:
                await producer.stop()

        asyncio.run(send())

    def end_offsets(self, topic: str) -> dict[int, int]:
        async def read() -> dict[int, int]:
            consumer = AIOKafkaConsumer(**aiokafka_options(self.settings))
            await consumer.start()
            try:
                tps = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
                return {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
            finally:
                await consumer.stop()

        return asyncio.run(read())

    def committed_offsets(self, topic: str) -> dict[int, int]:
        """The orchestrator group's committed offsets of `topic`, by partition."""
        return asyncio.run(orchestrator_offsets(self.settings, topic))

    def produce(self, topic: str, key: bytes | None, values: list[bytes]) -> None:
        """Produce raw values (possibly garbage) to a topic, acknowledged by the broker."""

        async def send() -> None:
            producer = AIOKafkaProducer(**aiokafka_options(self.settings))
            await producer.start()
            try:
                for value in values:
                    await producer.send_and_wait(topic, value, key=key)
            finally:
                await producer.stop()

        asyncio.run(send())

    def create_topic(
        self, name: str, partitions: int = 1, config: dict[str, str] | None = None
    ) -> None:
        """Create a topic up front: an auto-created one stalls its first producer for seconds."""

        async def create() -> None:
            admin = AIOKafkaAdminClient(**aiokafka_options(self.settings))
            await admin.start()
            try:
                await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config)])
            finally:
                await admin.close()

        asyncio.run(create())

    def configure_topic(self, name: str, config: dict[str, str]) -> None:
        """Change a topic's configuration (e.g. lift a limit a test imposed); returns once the
        broker describes the change."""

        async def alter() -> None:
            admin = AIOKafkaAdminClient(**aiokafka_options(self.settings))
            await admin.start()
            try:
                await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, config)])
                await described(admin, name, lambda now: config.items() <= now.items())
            finally:
                await admin.close()

        asyncio.run(alter())

    # --- observing -----------------------------------------------------------------------------

    def get(self, saga_id: str, worker: int = 0) -> dict[str, Any] | None:
        status, body = http_json(
            "GET", f"{self.workers[worker].url}/sagas/{saga_id}", token=self.read_token
        )
        if status == 404:
            return None
        assert status == 200, f"GET /sagas/{saga_id}: {status} {body}"
        assert isinstance(body, dict)
        return body

    def wait_for(
        self,
        saga_id: str,
        statuses: frozenset[str] = FINISHED,
        timeout: float = 60.0,
        worker: int = 0,
    ) -> dict[str, Any]:
        """Poll the web view until the saga reaches one of `statuses`; fail at the deadline."""
        return self.wait_until(saga_id, lambda s: s["status"] in statuses, timeout, worker)

    def wait_until(
        self,
        saga_id: str,
        condition: Callable[[dict[str, Any]], bool],
        timeout: float = 60.0,
        worker: int = 0,
    ) -> dict[str, Any]:
        """Poll the web view until the saga meets `condition`; fail at the deadline."""
        deadline = time.monotonic() + timeout
        saga: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            saga = self.get(saga_id, worker)
            if saga is not None and condition(saga):
                return saga
            time.sleep(0.2)  # polling interval
        raise AssertionError(f"saga {saga_id} did not get there in {timeout}s: {saga}")

    def read_topic(self, topic: str) -> list[tuple[bytes | None, bytes | None]]:
        """Every record now in `topic` (up to its current end offsets), as (key, value)."""

        async def read() -> list[tuple[bytes | None, bytes | None]]:
            # Subscribed (without a group) rather than assigned by hand: only then does the client
            # fetch metadata for the topic, so no partition is silently left out.
            consumer = AIOKafkaConsumer(
                topic,
                **aiokafka_options(self.settings),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            try:
                deadline = time.monotonic() + 30
                while not consumer.assignment():
                    assert time.monotonic() < deadline, f"no partitions of {topic} assigned"
                    await consumer.getmany(timeout_ms=100)
                tps = sorted(consumer.assignment())
                await consumer.seek_to_beginning(*tps)
                ends = await consumer.end_offsets(tps)
                out: list[tuple[bytes | None, bytes | None]] = []
                while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                    assert time.monotonic() < deadline, f"could not read {topic} to its end"
                    batch = await consumer.getmany(*tps, timeout_ms=500)
                    for tp, records in batch.items():
                        out.extend((r.key, r.value) for r in records if r.offset < ends[tp])
                return out
            finally:
                await consumer.stop()

        return asyncio.run(read())

    def produce_events(self, events: list[tuple[str, str | None, dict[str, Any]]]) -> None:
        """Publish domain events as a service would: (topic as definitions name it, key, event),
        in this order, through one producer."""

        async def send() -> None:
            async with SagaClient(self.settings) as client:
                for topic, key, event in events:
                    await client.publish(topic, event, key=key)

        asyncio.run(send())

    def outcomes_of(self, saga_id: str) -> list[dict[str, Any]]:
        """What the tracker announced about a tracked saga on `saga.outcomes`."""
        key = saga_id.encode()
        return [json.loads(v) for k, v in self.read_topic(self.catalog.outcomes) if k == key and v]

    def events_of(self, saga_id: str) -> list[dict[str, Any]]:
        """The saga's transitions as published on `saga.events`."""
        key = saga_id.encode()
        return [json.loads(v) for k, v in self.read_topic(self.catalog.events) if k == key and v]

    def dead_letters(self) -> list[dict[str, Any]]:
        return [json.loads(v) for _, v in self.read_topic(self.catalog.dlq) if v]
