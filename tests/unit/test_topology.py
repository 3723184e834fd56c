"""Every topic the apps use is one `ensure_topics` creates up front, with one partition count."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from participants import EXAMPLES
from saga_app.app import SagaWorker
from saga_app.participant_app import ParticipantWorker
from saga_app.registry import EXAMPLES as EXAMPLE_SAGAS
from saga_app.registry import load_sagas
from saga_app.settings import Settings
from saga_app.topology import (
    answers_kept,
    expiry_config,
    participant_group,
    participant_topics,
    worker_topics,
)

SAGAS = load_sagas([EXAMPLE_SAGAS])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(topic_prefix="x.", partitions=6, data_dir=str(tmp_path), store="memory://")


def test_every_table_changelog_is_created_up_front(settings: Settings) -> None:
    """The changelogs of both apps' tables are among the topics each process creates first."""
    names = [p.name for p in EXAMPLES]
    for app, plan in [
        (SagaWorker(settings, SAGAS).app, worker_topics(settings, SAGAS)),
        (ParticipantWorker(settings, EXAMPLES).app, participant_topics(settings, names)),
    ]:
        used = {t.changelog_topic.get_topic_name() for t in app.tables.values()}
        assert used == set(plan.changelogs)


def test_every_command_topic_of_the_participants_is_created_up_front(settings: Settings) -> None:
    """Each participant's command topic is created by its process and by the worker."""
    app = ParticipantWorker(settings, EXAMPLES).app
    consumed = {name for topic in app.topics for name in topic.topics}
    assert consumed <= set(participant_topics(settings, [p.name for p in EXAMPLES]).topics)
    assert consumed <= set(worker_topics(settings, SAGAS).topics)


def test_a_worker_creates_the_command_topics_of_the_participants_its_sagas_name(
    settings: Settings,
) -> None:
    """Only the participants of the loaded sagas get command topics from a worker."""
    only_orders = load_sagas(["saga_app.sagas.create_order"])
    topics = worker_topics(settings, only_orders).topics
    assert "x.payments.commands" in topics
    assert "x.workers.commands" not in topics


def test_each_participant_service_has_its_own_consumer_group() -> None:
    """Two services never share a group; the order of the names does not matter."""
    assert participant_group(["payments"]) != participant_group(["inventory"])
    assert participant_group(["b", "a"]) == participant_group(["a", "b"]) == "saga-participant-a-b"


def test_the_participants_forget_answers_after_the_retention_and_keep_records(
    settings: Settings,
) -> None:
    """`answered`'s changelog and store keep a reply SAGA_RETENTION (7 days here); the
    participants' own records are their database and never expire. 0 keeps answers too."""
    names = [p.name for p in EXAMPLES]
    plan = participant_topics(settings, names)
    group = participant_group(names)
    assert plan.expiring == (f"x.{group}-answered-changelog",)
    assert answers_kept(settings) == 7 * 86400
    tables = ParticipantWorker(settings, EXAMPLES).app.tables
    ttls = {name: (table.options or {}).get("ttl") for name, table in tables.items()}
    assert ttls.pop("answered") == 7 * 86400
    assert set(ttls.values()) == {None}
    assert expiry_config(settings) == {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(7 * 86400 * 1000),
    }
    forever = replace(settings, retention=0)
    assert answers_kept(forever) == 0  # RocksDB's ttl 0: entries never expire
    assert expiry_config(forever) == {"cleanup.policy": "compact"}
