"""The web API on a cluster of two workers: any saga from any worker, lists across the cluster,
sagas started and operated over HTTP, metrics that move, and no 500 for any input."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from services import http_json

from saga_app.registry import EXAMPLES
from tests.integration.saga_system import (
    HELD,
    SagaSystem,
    assert_compensated_by_abort,
    eventually,
)


@pytest.fixture(scope="module")
def cluster(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SagaSystem]:
    workdir: Path = tmp_path_factory.mktemp("web")
    prefix = f"w{uuid.uuid4().hex[:8]}."
    running = SagaSystem(kafka_bootstrap, workdir, prefix, workers=2, sagas=[EXAMPLES, HELD])
    running.start()
    running.wait_until_workers_share_partitions()
    yield running
    running.stop()


def post_saga(
    worker_url: str, saga_type: str, payload: dict[str, Any], saga_id: str | None = None
) -> str:
    """POST /sagas (with `saga_id`, or letting the worker make one); the saga's id."""
    request: dict[str, Any] = {"saga_type": saga_type, "payload": payload}
    if saga_id is not None:
        request["saga_id"] = saga_id
    status, body = http_json("POST", f"{worker_url}/sagas", request)
    assert status == 202, body
    started: str = body["saga_id"]
    return started


def order_payload(**simulate: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "customer_id": f"c-{uuid.uuid4().hex[:6]}",
        "items": [{"sku": "web-sku", "qty": 1}],
        "amount": 5.0,
    }
    if simulate:
        payload["simulate"] = simulate
    return payload


@pytest.fixture(scope="module")
def started(cluster: SagaSystem) -> list[str]:
    """Ten sagas POSTed alternately to both workers, all finished: one on each partition (so
    each worker owns some), then six with ids the workers generate."""
    chosen = cluster.ids_on_every_partition("web")
    ids = [
        post_saga(cluster.workers[n % 2].url, "create_order", order_payload(), saga_id)
        for n, saga_id in enumerate([*chosen, *[None] * (10 - len(chosen))])
    ]
    for saga_id in ids:
        cluster.wait_for(saga_id)
    return ids


def test_each_worker_owns_part_of_the_partitions(cluster: SagaSystem) -> None:
    """Two workers split the saga partitions between them without overlap."""
    parts = [set(http_json("GET", f"{w.url}/health")[1]["partitions"]) for w in cluster.workers]
    assert parts[0] and parts[1]
    assert not parts[0] & parts[1]
    assert parts[0] | parts[1] == set(range(cluster.settings.partitions))


def test_posted_sagas_complete_and_are_readable_through_either_worker(
    cluster: SagaSystem, started: list[str]
) -> None:
    """A saga is served by whichever worker is asked, routed to its owner."""
    for saga_id in started:
        via = [cluster.get(saga_id, worker=w) for w in (0, 1)]
        assert via[0] == via[1]
        assert via[0] is not None and via[0]["status"] == "completed"


def test_unknown_saga_is_404_through_either_worker(cluster: SagaSystem) -> None:
    """An unknown saga id is a 404 with a JSON error, whoever owns its partition."""
    for worker in cluster.workers:
        status, body = http_json("GET", f"{worker.url}/sagas/nope-{uuid.uuid4().hex}")
        assert status == 404
        assert "no saga" in body["error"]


def test_cluster_list_has_every_saga_newest_first(cluster: SagaSystem, started: list[str]) -> None:
    """`GET /sagas` on one worker lists the sagas of both workers, newest first."""
    for worker in cluster.workers:
        status, sagas = http_json("GET", f"{worker.url}/sagas?limit=1000")
        assert status == 200
        ids = [s["saga_id"] for s in sagas]
        assert set(started) <= set(ids)
        created = [s["created_at"] for s in sagas]
        assert created == sorted(created, reverse=True)
    local = [http_json("GET", f"{w.url}/sagas?local=1&limit=1000")[1] for w in cluster.workers]
    assert all(local), "each worker owns some of the sagas"


def stats(cluster: SagaSystem, worker: int = 0) -> dict[str, Any]:
    status, body = http_json("GET", f"{cluster.workers[worker].url}/stats")
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def listed(cluster: SagaSystem, query: str = "") -> list[dict[str, Any]]:
    status, sagas = http_json("GET", f"{cluster.url}/sagas?limit=1000{query}")
    assert status == 200, sagas
    assert isinstance(sagas, list)
    return sagas


def test_cluster_list_filters_and_limits(cluster: SagaSystem, started: list[str]) -> None:
    """Filters by status and type apply across the cluster, and limit caps the answer."""
    compensated_before = stats(cluster, worker=1)["by_status"].get("compensated", 0)
    failing = post_saga(cluster.url, "create_order", order_payload(charge_payment="fail"))
    cluster.wait_for(failing)
    status, compensated = http_json("GET", f"{cluster.url}/sagas?status=compensated")
    assert status == 200
    assert failing in {s["saga_id"] for s in compensated}
    assert all(s["status"] == "compensated" for s in compensated)
    _, orders = http_json("GET", f"{cluster.url}/sagas?saga_type=create_order&limit=3")
    assert len(orders) == 3
    assert all(s["saga_type"] == "create_order" for s in orders)
    everything = listed(cluster)
    for saga_type in ("create_order", "create_run", "create_experiment"):
        assert [s["saga_id"] for s in listed(cluster, f"&saga_type={saga_type}")] == [
            s["saga_id"] for s in everything if s["saga_type"] == saga_type
        ]

    # Counted across both workers: one more compensated saga than before this test, and as
    # many completed orders as the cluster lists (whatever other tests have run already).
    def counts_and_completed() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return stats(cluster, worker=1), listed(cluster, "&saga_type=create_order&status=completed")

    counts, completed = eventually(
        counts_and_completed,
        lambda read: (
            read[0]["by_status"].get("compensated", 0) >= compensated_before + 1
            and read[0]["by_type"]["create_order"].get("completed", 0) == len(read[1])
        ),
        "/stats counting the failed order and every completed one",
    )
    assert counts["by_status"]["compensated"] == compensated_before + 1
    assert set(started) <= {s["saga_id"] for s in completed}


def test_abort_and_retry_through_the_api(cluster: SagaSystem) -> None:
    """Abort compensates a running saga; retry re-drives a failed one, via either worker."""
    # held_order waits an hour at reserve_stock: only the abort can end it within this test.
    running = post_saga(
        cluster.workers[0].url, "held_order", order_payload(reserve_stock="timeout")
    )
    cluster.wait_for(running, frozenset({"in_progress"}))
    status, _ = http_json(
        "POST", f"{cluster.workers[1].url}/sagas/{running}/abort", {"reason": "aborted via web"}
    )
    assert status == 202
    assert_compensated_by_abort(cluster.wait_for(running), "aborted via web")

    stuck = post_saga(
        cluster.workers[1].url,
        "create_order",
        order_payload(charge_payment="fail", create_order="fail_compensation:5"),
    )
    assert cluster.wait_for(stuck)["status"] == "failed"
    status, _ = http_json("POST", f"{cluster.workers[0].url}/sagas/{stuck}/retry")
    assert status == 202
    assert cluster.wait_for(stuck, frozenset({"compensated"}))["status"] == "compensated"


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 if absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$"
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m and ",".join(sorted((m.group(1) or "").split(","))) == wanted:
            return float(m.group(2))
    return 0.0


def total_over_workers(cluster: SagaSystem, name: str, **labels: str) -> float:
    return sum(
        metric(http_json("GET", f"{w.url}/metrics")[1], name, **labels) for w in cluster.workers
    )


def test_metrics_move_as_sagas_run(cluster: SagaSystem) -> None:
    """Started and finished counters and the duration histogram grow with each saga."""
    counters = {
        "saga_started_total": {"saga_type": "create_run"},
        "saga_finished_total": {"saga_type": "create_run", "status": "completed"},
    }

    def read() -> dict[str, float]:
        return {
            name: total_over_workers(cluster, name, **labels) for name, labels in counters.items()
        }

    before = read()
    records_before = total_over_workers(cluster, "saga_loop_records_total")
    ids = [
        post_saga(cluster.url, "create_run", {"experiment_id": "e", "config": {}, "resources": 1})
        for _ in range(3)
    ]
    for saga_id in ids:
        assert cluster.wait_for(saga_id)["status"] == "completed"
    # The view may show a saga finished a moment before its worker has counted it: poll.
    after = eventually(
        read, lambda now: all(now[n] - before[n] >= 3 for n in counters), "3 create_run counted"
    )
    assert {n: after[n] - before[n] for n in counters} == {n: 3 for n in counters}
    text = http_json("GET", f"{cluster.url}/metrics")[1]
    assert "saga_duration_seconds_bucket" in text
    assert "faust_messages_received" in text  # Faust's own sensors on the same page
    # each saga's start and at least one reply went through a worker's fetch loop
    assert total_over_workers(cluster, "saga_loop_records_total") - records_before >= 6
    assert total_over_workers(cluster, "saga_loop_busy_seconds_total", phase="handle") > 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"saga_type": st.sampled_from(["create_order", "nope", ""]) | st.integers()},
        optional={"payload": json_values, "saga_id": json_values},
    ).map(lambda v: json.dumps(v).encode()),
)
paths = st.sampled_from(["/sagas", "/sagas/{x}", "/sagas/{x}/abort", "/sagas/{x}/retry", "/stats"])
saga_ids = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=30)
queries = st.sampled_from(
    ["", "?limit=0", "?limit=abc", "?limit=5000", "?status=bogus", "?limit=2"]
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST"]),
    path=paths,
    saga_id=saga_ids,
    query=queries,
    body=bodies,
)
def test_no_input_gets_a_500(
    cluster: SagaSystem, method: str, path: str, saga_id: str, query: str, body: bytes
) -> None:
    """Whatever the method, path, query or body, the answer is not a 5xx, and errors are JSON."""
    url = cluster.url + path.replace("{x}", quote(saga_id, safe="")) + query
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        status = e.code
        assert "error" in json.loads(e.read()), (url, status)
    assert status < 500, (method, url, body)


def test_oversized_body_is_413(cluster: SagaSystem) -> None:
    """A body over the size limit is refused with 413 and says the limit."""
    payload = {"saga_type": "create_order", "payload": {"blob": "x" * 300_000}}
    status, body = http_json("POST", f"{cluster.url}/sagas", payload)
    assert status == 413
    assert "limit" in body["error"]
