"""Bearer tokens on a cluster of two real workers: every write and (with the read token) every read
is refused without the right token and served with it, also when the request is routed to the
other worker or fanned out to both; probes and the dashboard page stay open."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import http_json

from saga_app.registry import EXAMPLES
from tests.integration.saga_system import (
    HELD,
    SagaSystem,
    assert_compensated_by_abort,
    eventually,
)
from tests.integration.test_web import order_payload

WRITE_TOKEN = f"w-{uuid.uuid4().hex}"
READ_TOKEN = f"r-{uuid.uuid4().hex}"
REFUSED = {"no token": "", "wrong token": "not-the-token", "read token": READ_TOKEN}
"""Tokens a write must be refused with ("" sends no Authorization header)."""
READS = ["/sagas", "/sagas/{id}", "/stats", "/definitions", "/metrics"]


@pytest.fixture(scope="module")
def cluster(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SagaSystem]:
    workdir: Path = tmp_path_factory.mktemp("web-auth")
    running = SagaSystem(
        kafka_bootstrap,
        workdir,
        f"a{uuid.uuid4().hex[:8]}.",
        workers=2,
        web_token=WRITE_TOKEN,
        web_read_token=READ_TOKEN,
        sagas=[EXAMPLES, HELD],
    )
    try:
        running.start()
        running.wait_until_workers_share_partitions()
        yield running
    finally:
        running.stop()


def start(
    url: str, token: str, payload: dict[str, Any], saga_id: str, saga_type: str = "create_order"
) -> tuple[int, Any]:
    body = {"saga_type": saga_type, "payload": payload, "saga_id": saga_id}
    return http_json("POST", f"{url}/sagas", body, token=token)


def assert_refused(answer: tuple[int, Any], words: str) -> None:
    status, body = answer
    assert status == 401, answer
    assert isinstance(body, dict) and words in body["error"], body
    assert WRITE_TOKEN not in body["error"] and READ_TOKEN not in body["error"]


@pytest.fixture(scope="module")
def finished(cluster: SagaSystem) -> list[str]:
    """Eight sagas started with the write token, alternately through both workers, all completed."""
    ids = cluster.ids_on_every_partition("auth", per_partition=2)  # so both workers own some
    for n, saga_id in enumerate(ids):
        status, body = start(cluster.workers[n % 2].url, WRITE_TOKEN, order_payload(), saga_id)
        assert status == 202, body
    for saga_id in ids:
        assert cluster.wait_for(saga_id)["status"] == "completed"
    return ids


def test_health_and_the_dashboard_page_need_no_token(cluster: SagaSystem) -> None:
    """`/health` and `/` answer without a token on a worker that has both tokens set."""
    for worker in cluster.workers:
        assert http_json("GET", f"{worker.url}/health", token="")[0] == 200
        with urllib.request.urlopen(f"{worker.url}/", timeout=10) as response:
            assert response.status == 200 and b"kafka-saga" in response.read()


def test_a_refused_start_never_reaches_the_saga(cluster: SagaSystem) -> None:
    """Starts without the write token get 401 and change nothing; with it the saga runs."""
    saga_id = f"auth-start-{uuid.uuid4().hex[:8]}"
    # would compensate, had any refused start got through
    doomed = order_payload(charge_payment="fail")
    assert_refused(start(cluster.url, "", doomed, saga_id), "missing token")
    assert_refused(start(cluster.url, REFUSED["wrong token"], doomed, saga_id), "wrong token")
    assert_refused(start(cluster.url, READ_TOKEN, doomed, saga_id), "read token cannot")
    status, body = start(cluster.workers[1].url, WRITE_TOKEN, order_payload(), saga_id)
    assert (status, body) == (202, {"saga_id": saga_id})
    assert cluster.wait_for(saga_id)["status"] == "completed"


def test_a_refusal_says_bearer_in_its_challenge(cluster: SagaSystem) -> None:
    """A 401 carries `WWW-Authenticate: Bearer`, marked invalid_token when a token was sent."""
    for header, challenge in [(None, 'Bearer realm="kafka-saga"'), ("Bearer x", "invalid_token")]:
        request = urllib.request.Request(f"{cluster.url}/stats")
        if header:
            request.add_header("Authorization", header)
        try:
            urllib.request.urlopen(request, timeout=10)
        except urllib.error.HTTPError as e:
            assert e.code == 401
            assert challenge in e.headers["WWW-Authenticate"]
        else:
            raise AssertionError("GET /stats without a token was served")


def test_abort_needs_the_write_token(cluster: SagaSystem) -> None:
    """Aborts without the write token get 401 and change nothing; the one with it compensates."""
    saga_id = f"auth-abort-{uuid.uuid4().hex[:8]}"
    # held_order waits an hour at reserve_stock: only an abort can end it within this test.
    hanging = order_payload(reserve_stock="timeout")
    assert start(cluster.url, WRITE_TOKEN, hanging, saga_id, saga_type="held_order")[0] == 202
    cluster.wait_for(saga_id, frozenset({"in_progress"}))
    for label, token in REFUSED.items():
        answer = http_json(
            "POST", f"{cluster.url}/sagas/{saga_id}/abort", {"reason": label}, token=token
        )
        assert_refused(answer, "SAGA_WEB_TOKEN")
    url = f"{cluster.workers[1].url}/sagas/{saga_id}/abort"
    status, _ = http_json("POST", url, {"reason": "the operator"}, token=WRITE_TOKEN)
    assert status == 202
    # One abort applied, the operator's: had a refused one got through, it would be the first.
    assert_compensated_by_abort(cluster.wait_for(saga_id), "the operator")


def test_retry_needs_the_write_token(cluster: SagaSystem, finished: list[str]) -> None:
    """Retries without the write token get 401; with it the request is accepted."""
    url = f"{cluster.url}/sagas/{finished[0]}/retry"
    for token in REFUSED.values():
        assert_refused(http_json("POST", url, token=token), "SAGA_WEB_TOKEN")
    assert http_json("POST", url, token=WRITE_TOKEN) == (
        202,
        {"saga_id": finished[0], "accepted": "retry"},
    )


@pytest.mark.parametrize("path", READS)
def test_reads_need_the_read_or_the_write_token(
    cluster: SagaSystem, finished: list[str], path: str
) -> None:
    """Each read is refused without a token or with a wrong one, and served with either token."""
    url = cluster.url + path.replace("{id}", finished[0])
    assert_refused(http_json("GET", url, token=""), "missing token")
    assert_refused(http_json("GET", url, token="not-the-token"), "wrong token")
    for token in (READ_TOKEN, WRITE_TOKEN):
        status, body = http_json("GET", url, token=token)
        assert status == 200, (token == READ_TOKEN, body)


def test_a_saga_is_read_through_the_worker_that_does_not_own_it(
    cluster: SagaSystem, finished: list[str]
) -> None:
    """Faust's router forwards the token, so either worker serves any saga with the read token."""
    owned = cluster.wait_until_workers_share_partitions()
    by_owner = {
        w: [s for s in finished if cluster.catalog.partition_of(s) in owned[w]] for w in (0, 1)
    }
    assert by_owner[0] and by_owner[1], by_owner
    for owner, other in ((0, 1), (1, 0)):
        saga_id = by_owner[owner][0]
        url = f"{cluster.workers[other].url}/sagas/{saga_id}"
        assert_refused(http_json("GET", url, token=""), "missing token")
        status, saga = http_json("GET", url, token=READ_TOKEN)
        assert status == 200, saga
        assert saga["saga_id"] == saga_id and saga["status"] == "completed"


def test_lists_and_counts_span_both_workers_with_the_token(
    cluster: SagaSystem, finished: list[str]
) -> None:
    """The fan-out asks the other worker with this worker's token, so lists and counts are whole."""

    def completed_ids(url: str) -> set[str]:
        status, sagas = http_json("GET", url, token=READ_TOKEN)
        assert status == 200, sagas
        return {s["saga_id"] for s in sagas if s["status"] == "completed"}

    for worker in cluster.workers:
        assert set(finished) <= completed_ids(f"{worker.url}/sagas?limit=1000")
        local = completed_ids(f"{worker.url}/sagas?local=1&limit=1000")
        assert 0 < len(local & set(finished)) < len(finished)

    def counts() -> tuple[int, int, int]:
        """(completed in /stats on each worker, completed in both workers' own lists)."""
        stats = [http_json("GET", f"{w.url}/stats", token=READ_TOKEN) for w in cluster.workers]
        assert all(status == 200 for status, _ in stats), stats
        own = [completed_ids(f"{w.url}/sagas?local=1&limit=1000") for w in cluster.workers]
        by_worker = [body["by_status"].get("completed", 0) for _, body in stats]
        return by_worker[0], by_worker[1], len(own[0] | own[1])

    # Each worker's count is the whole cluster's: what both workers hold themselves.
    eventually(counts, lambda c: c[0] == c[1] == c[2], "/stats of each worker = both workers' own")


def test_saga_status_sends_the_token_from_the_environment(
    cluster: SagaSystem, finished: list[str]
) -> None:
    """`saga status` reads with SAGA_WEB_READ_TOKEN, and says which variable to set on a 401."""

    def status(**env: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "saga_app.cli", "status", finished[1]]
        command += ["--url", cluster.url]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_WEB_")}
        return subprocess.run(
            command, env={**clean, **env}, capture_output=True, text=True, timeout=60
        )

    refused = status()
    assert refused.returncode == 1 and "401" in refused.stderr
    assert "SAGA_WEB_READ_TOKEN" in refused.stderr
    shown = status(SAGA_WEB_READ_TOKEN=READ_TOKEN)
    assert shown.returncode == 0, shown.stderr
    assert f'"saga_id": "{finished[1]}"' in shown.stdout


def test_no_process_logs_a_token(cluster: SagaSystem) -> None:
    """After all the refused and accepted requests above, no log line holds either token."""
    for service in [*cluster.workers, cluster.participants]:
        text = service.log_path.read_text(errors="replace")
        assert "web_request_refused" in text or service is cluster.participants
        assert WRITE_TOKEN not in text and READ_TOKEN not in text, service.name
