"""Retention on the real broker: a worker with SAGA_RETENTION=2s deletes finished sagas from its
table with a tombstone on the changelog, while their events stay on `saga.events`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from services import http_json

from participants import EXAMPLES
from saga_app.connection import aiokafka_options
from saga_app.settings import Settings
from saga_app.topology import (
    ORCHESTRATOR_APP,
    SAGA_TABLE,
    changelog,
    keep_expiring,
    participant_group,
)
from tests.integration.saga_system import SagaSystem, described, eventually, topic_configs
from tests.integration.test_sagas import order
from topics.schemas import json_schemas

RETENTION = 2.0


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SagaSystem]:
    workdir: Path = tmp_path_factory.mktemp("retention")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    running = SagaSystem(
        kafka_bootstrap, workdir, prefix, env={"SAGA_RETENTION": f"{RETENTION:g}s"}
    ).start()
    yield running
    running.stop()


def poll(find: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Call `find` until it returns something truthy; fail at the deadline naming `what`."""
    deadline = time.monotonic() + timeout
    while not (found := find()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.2)  # polling interval
    return found


def test_finished_sagas_are_deleted_after_the_retention_and_their_events_stay(
    system: SagaSystem,
) -> None:
    """A completed and a compensated saga answer 404 once 2s have passed since they finished,
    their table keys end in a changelog tombstone, and saga.events still has their history."""
    done = system.start_saga("create_order", order(), f"kept-{uuid.uuid4().hex[:10]}")
    undone = system.start_saga(
        "create_order", order({"reserve_stock": "fail"}), f"undone-{uuid.uuid4().hex[:10]}"
    )
    finished = {saga_id: system.wait_for(saga_id) for saga_id in (done, undone)}
    assert {s["status"] for s in finished.values()} == {"completed", "compensated"}

    for saga_id, saga in finished.items():
        poll(lambda saga_id=saga_id: system.get(saga_id) is None, f"{saga_id} deleted")
        # By the timer's own clock (the worker's), never before its retention had passed.
        assert time.time() >= saga["updated_at"] + RETENTION
    status, body = _get(system, f"/sagas/{done}")
    assert status == 404
    assert "deleted 2s after it finished" in body["error"]
    assert system.catalog.events in body["error"]
    listed = _get(system, "/sagas?limit=1000")[1]
    assert {done, undone}.isdisjoint(s["saga_id"] for s in listed)

    table = changelog(system.settings, ORCHESTRATOR_APP, SAGA_TABLE)
    for saga_id in (done, undone):
        key = saga_id.encode()
        values = poll(
            lambda key=key: _ends_in_tombstone(
                [v for k, v in system.read_topic(table) if k == key]
            ),
            f"tombstone of {saga_id} on {table}",
        )
        assert all(v is not None for v in values[:-1]), "only the last record is a tombstone"
        history = [e["event"] for e in system.events_of(saga_id)]
        assert history[0] == "saga_started"
        assert history[-1] == f"saga_{finished[saga_id]['status']}"
        assert [h["event"] for h in finished[saga_id]["history"]] == history

    timers = [
        json.loads(v)
        for k, v in system.read_topic(system.catalog.requests)
        if k in (done.encode(), undone.encode()) and v and b'"retention"' in v
    ]
    assert sorted(t["saga_id"] for t in timers) == sorted([done, undone])
    request_schema = json_schemas()["request"]
    for timer in timers:
        jsonschema.validate(timer, request_schema)
    expired = [
        f'saga_expired_total{{saga_type="create_order",status="{status}"}} 1.0'
        for status in ("completed", "compensated")
    ]
    # Polled: the counter need not move in the same instant as the table.
    eventually(
        lambda: [m for m in str(_get(system, "/metrics")[1]).splitlines() if "expired" in m],
        lambda metrics: all(line in metrics for line in expired),
        "saga_expired_total counting both sagas",
    )


def _ends_in_tombstone(values: list[bytes | None]) -> list[bytes | None] | None:
    return values if values and values[-1] is None else None


def _get(system: SagaSystem, path: str) -> tuple[int, Any]:
    return http_json("GET", f"{system.url}{path}", token=system.read_token)


def test_the_participants_answers_expire_with_the_retention_and_their_records_stay(
    system: SagaSystem,
) -> None:
    """The participants' `answered` changelog, created by their process, deletes what is older
    than SAGA_RETENTION (compacted until then); their own records' changelogs stay compacted."""
    group = participant_group(p.name for p in EXAMPLES)
    answered = changelog(system.settings, group, "answered")
    records = changelog(system.settings, group, "payments-records")
    configs = asyncio.run(_topic_configs(system.settings, [answered, records]))
    assert configs[answered]["cleanup.policy"] == "compact,delete"
    assert configs[answered]["retention.ms"] == str(int(RETENTION * 1000))
    assert configs[records]["cleanup.policy"] == "compact"


async def test_an_existing_answers_changelog_is_kept_to_the_retention_and_its_other_settings(
    system: SagaSystem, unique_name: Callable[[str], str]
) -> None:
    """A changelog created before answers expired (compacted only), with an operator's own
    `segment.ms`, gets the retention's configs and keeps the operator's; a second start alters
    nothing; `SAGA_RETENTION=0` makes it compacted only again. A refusal does not stop the
    process."""
    settings = replace(system.settings, retention=RETENTION)
    topic = unique_name("answered-changelog")
    older = {"cleanup.policy": "compact", "segment.ms": "600000", "min.insync.replicas": "1"}
    admin = AIOKafkaAdminClient(**aiokafka_options(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=older)])
        assert await keep_expiring(admin, [topic], settings) == [topic]
        config = await described(
            admin,
            topic,
            lambda c: (c["cleanup.policy"], c["retention.ms"]) == ("compact,delete", "2000"),
        )
        assert (config["segment.ms"], config["min.insync.replicas"]) == ("600000", "1")
        assert await keep_expiring(admin, [topic], settings) == []

        forever = replace(settings, retention=0)
        assert await keep_expiring(admin, [topic], forever) == [topic]
        config = await described(admin, topic, lambda c: c["cleanup.policy"] == "compact")
        assert config["retention.ms"] == str(7 * 86400 * 1000)  # the broker's default again
        assert config["segment.ms"] == "600000"

        # A topic the cluster will not describe (here: none such) is warned of, not fatal.
        assert await keep_expiring(admin, [unique_name("missing")], settings) == []
    finally:
        await admin.close()


async def _topic_configs(settings: Settings, topics: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(**aiokafka_options(settings))
    await admin.start()
    try:
        return await topic_configs(admin, topics)
    finally:
        await admin.close()
