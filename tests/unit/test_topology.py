"""Every topic the apps use is one `ensure_topics` creates up front, with one partition count."""

from __future__ import annotations

from pathlib import Path

import pytest

from participants.app import ParticipantsWorker
from saga_app.app import SagaWorker
from saga_app.settings import Settings
from saga_app.topology import changelog_topics, saga_topics


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(topic_prefix="x.", partitions=6, data_dir=str(tmp_path), store="memory://")


def test_every_table_changelog_is_created_up_front(settings: Settings) -> None:
    """The changelogs of both apps' tables are among the topics created before they start."""
    apps = [SagaWorker(settings).app, ParticipantsWorker(settings).app]
    used = {t.changelog_topic.get_topic_name() for app in apps for t in app.tables.values()}
    assert used <= set(changelog_topics(settings)), used - set(changelog_topics(settings))


def test_every_command_topic_of_the_participants_is_created_up_front(settings: Settings) -> None:
    """Each participant's command topic and the saga topics share the table's partition count."""
    app = ParticipantsWorker(settings).app
    consumed = {name for topic in app.topics for name in topic.topics}
    assert consumed <= set(saga_topics(settings))
