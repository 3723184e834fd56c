"""The dashboard at `/`, in a real headless browser (Debian's chromium driven by playwright) against
a real worker and the participants: it counts, lists, filters and opens sagas, operates them, and
draws the saga definitions. A full-page screenshot is left in `artifacts/dashboard.png`."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from services import http_json

from saga_app.registry import EXAMPLES
from tests.integration.saga_system import (
    HELD,
    SagaSystem,
    assert_compensated_by_abort,
    eventually,
)
from topics import Reply

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
WAIT_MS = 20_000
"""How long an expectation waits for the page (it refreshes every 2 s)."""


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def order(simulate: dict[str, str] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "customer_id": new_id("customer"),
        "items": [{"sku": new_id("sku"), "qty": 1}],
        "amount": 25.0,
    }
    if simulate:
        payload["simulate"] = simulate
    return payload


EXPERIMENT = {"user_id": "u1", "name": "exp", "resources": {"gpus": 2}}
SAGA_TYPES = [
    "create_experiment",
    "create_experiment_choreo",
    "create_order",
    "create_run",
    "held_order",
]
"""What the worker runs: the examples and held_order (tests/integration/held_sagas.py)."""
STATUSES = ["in_progress", "compensating", "completed", "compensated", "failed"]


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SagaSystem]:
    workdir: Path = tmp_path_factory.mktemp("dashboard")
    prefix = f"d{uuid.uuid4().hex[:8]}."
    running = SagaSystem(kafka_bootstrap, workdir, prefix, sagas=[EXAMPLES, HELD]).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def sagas(system: SagaSystem) -> dict[str, str]:
    """One completed order, one compensated order, one completed experiment, oldest first."""
    started = {
        "completed": system.start_saga("create_order", order(), new_id("ok")),
        "compensated": system.start_saga(
            "create_order", order({"charge_payment": "fail"}), new_id("refused")
        ),
        "experiment": system.start_saga("create_experiment", EXPERIMENT, new_id("exp")),
    }
    outcomes = {label: system.wait_for(saga_id) for label, saga_id in started.items()}
    statuses = {label: saga["status"] for label, saga in outcomes.items()}
    expected = {"completed": "completed", "compensated": "compensated", "experiment": "completed"}
    assert statuses == expected, {label: saga["error"] for label, saga in outcomes.items()}
    return started


def headless_chromium() -> Iterator[Browser]:
    """Debian's chromium driven by Playwright, for a module's `browser` fixture."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def browser(sagas: dict[str, str]) -> Iterator[Browser]:
    """Headless chromium. Playwright's sync API keeps an event loop running on this thread, so
    `asyncio.run` (the system's start and `start_saga`) must be done before it starts."""
    yield from headless_chromium()


@pytest.fixture
def console_errors() -> list[str]:
    """What the page reported as errors: console errors and uncaught exceptions."""
    return []


@pytest.fixture
def page(
    system: SagaSystem, sagas: dict[str, str], browser: Browser, console_errors: list[str]
) -> Iterator[Page]:
    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            console_errors.append(f"console: {message.text} at {message.location}")

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    opened = context.new_page()
    opened.on("console", on_console)
    opened.on("pageerror", lambda error: console_errors.append(f"uncaught: {error}"))
    opened.goto(f"{system.url}/")
    yield opened
    context.close()


def rows(page: Page) -> Any:
    return page.locator('[data-testid="saga-row"]')


def row_ids(page: Page) -> list[str]:
    """The listed saga ids, read in one go: the list is re-rendered every 2 s, and reading row by
    row can ask for a row that a refresh has just removed (a 30 s wait for nothing)."""
    ids: list[str] = rows(page).evaluate_all("rows => rows.map((r) => r.dataset.sagaId)")
    return ids


def expect_rows(page: Page, saga_ids: list[str]) -> None:
    """Wait until the list shows exactly these sagas in this order (it refreshes every 2 s)."""
    eventually(lambda: row_ids(page), lambda shown: shown == saga_ids, "rows", WAIT_MS / 1000)


def listed(system: SagaSystem, query: str = "") -> list[str]:
    """The ids the API lists, newest first, with the page's default limit and `query`'s filters.

    The module's other tests add sagas to this worker (an aborted one, one from the form), so
    what the page shows is checked against what the API lists now, not against fixed numbers;
    each test then checks that its own sagas are among them.
    """
    status, sagas = http_json("GET", f"{system.url}/sagas?limit=100{query}")
    assert status == 200, sagas
    return [s["saga_id"] for s in sagas]


def counts(system: SagaSystem) -> dict[str, str]:
    """The cluster's sagas per status and in total, as the counters should show them."""
    status, sagas = http_json("GET", f"{system.url}/sagas?limit=1000")
    assert status == 200, sagas
    by_status = Counter(s["status"] for s in sagas)
    return {**{s: str(by_status[s]) for s in STATUSES}, "total": str(len(sagas))}


def test_page_loads_without_console_errors(
    page: Page, system: SagaSystem, sagas: dict[str, str], console_errors: list[str]
) -> None:
    """The page loads, fills in its list and counters, and reports no errors at all."""
    expect(page).to_have_title(re.compile("kafka-saga"))
    expect(rows(page)).to_have_count(len(listed(system)))
    for saga_id in sagas.values():
        expect(page.locator(f'[data-testid="saga-row"][data-saga-id="{saga_id}"]')).to_be_visible()
    expect(page.locator('[data-testid="definition"]')).to_have_count(len(SAGA_TYPES))
    expect(page.locator("#error-banner")).to_be_hidden()
    assert console_errors == []


def test_counters_show_the_sagas_by_status(
    page: Page, system: SagaSystem, sagas: dict[str, str]
) -> None:
    """The header counts the cluster's sagas per status, with the total."""
    expected = counts(system)
    # This module's sagas are among those counted: at least these, whatever ran before.
    assert int(expected["completed"]) >= 2 and int(expected["compensated"]) >= 1, expected
    counters = page.locator("#counters")
    for status, count in expected.items():
        expect(counters.locator(f'[data-status="{status}"] .count')).to_have_text(count)


def test_list_shows_every_saga_newest_first(
    page: Page, system: SagaSystem, sagas: dict[str, str]
) -> None:
    """The list shows each saga with its status and type, the newest first."""
    expect_rows(page, listed(system))
    ours = set(sagas.values())
    assert [saga_id for saga_id in row_ids(page) if saga_id in ours] == list(
        reversed(sagas.values())
    )
    refused = page.locator(f'[data-testid="saga-row"][data-saga-id="{sagas["compensated"]}"]')
    expect(refused.locator('[data-testid="saga-status"]')).to_have_text("compensated")
    expect(refused).to_contain_text("create_order")
    expect(refused).to_contain_text("simulated failure of charge_payment")


def test_filters_narrow_the_list(page: Page, system: SagaSystem, sagas: dict[str, str]) -> None:
    """Choosing a status or a saga type lists only the matching sagas, and the URL keeps it."""
    expect_rows(page, listed(system))
    page.select_option("#filter-status", "compensated")
    compensated = listed(system, "&status=compensated")
    assert sagas["compensated"] in compensated
    expect_rows(page, compensated)
    expect(page).to_have_url(re.compile(r"status=compensated"))

    page.select_option("#filter-status", "completed")
    completed = listed(system, "&status=completed")
    assert {sagas["completed"], sagas["experiment"]} <= set(completed)
    expect_rows(page, completed)
    page.select_option("#filter-type", "create_experiment")
    experiments = listed(system, "&status=completed&saga_type=create_experiment")
    assert sagas["experiment"] in experiments
    expect_rows(page, experiments)

    page.select_option("#filter-status", "failed")
    assert listed(system, "&status=failed&saga_type=create_experiment") == []  # none fail here
    expect_rows(page, [])
    expect(page.get_by_test_id("empty")).to_be_visible()


def test_opening_a_compensated_saga_shows_its_timeline(
    page: Page, sagas: dict[str, str], console_errors: list[str]
) -> None:
    """Clicking a saga shows its 4 steps with statuses, the compensations run, and its history."""
    saga_id = sagas["compensated"]
    page.locator(f'[data-testid="saga-row"][data-saga-id="{saga_id}"]').click()
    detail = page.locator(f'#saga-detail[data-saga-id="{saga_id}"]')
    expect(detail.get_by_test_id("detail-status")).to_have_text("compensated")
    expect(detail).to_contain_text("simulated failure of charge_payment")

    steps = detail.get_by_test_id("step")
    expect(steps).to_have_count(4)
    statuses = {s.get_attribute("data-step"): s.get_attribute("data-status") for s in steps.all()}
    assert statuses == {
        "create_order": "compensated",
        "reserve_stock": "compensated",
        "charge_payment": "failed",
        "send_confirmation": "pending",
    }
    compensations = detail.get_by_test_id("compensation")
    expect(compensations).to_have_count(2)
    expect(compensations.first).to_be_visible()
    release, cancel = (
        detail.locator(f'[data-testid="compensation"][data-step="{step}"]')
        for step in ("reserve_stock", "create_order")
    )
    expect(release).to_contain_text("release_stock")
    expect(cancel).to_contain_text("cancel_order")
    events = detail.get_by_test_id("history-event")
    expect(events.first).to_have_attribute("data-event", "saga_started")
    expect(events.last).to_have_attribute("data-event", "saga_compensated")
    expect(page.locator("#abort-button")).to_be_disabled()
    expect(page.locator("#retry-button")).to_be_disabled()
    expect(page).to_have_url(re.compile(f"saga={saga_id}"))

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)
    assert console_errors == []


def test_definitions_draw_each_saga_type(page: Page) -> None:
    """Each saga type is drawn as its chain of steps, compensations beneath and the pivot marked."""
    definitions = page.get_by_test_id("definition")
    expect(definitions).to_have_count(len(SAGA_TYPES))
    types = [d.get_attribute("data-saga-type") for d in definitions.all()]
    assert sorted(t or "" for t in types) == SAGA_TYPES

    orders = page.locator('[data-testid="definition"][data-saga-type="create_order"]')
    expect(orders.get_by_test_id("definition-step")).to_have_count(4)
    expect(orders.get_by_test_id("definition-compensation")).to_have_text(
        [
            re.compile("cancel_order"),
            re.compile("release_stock"),
            re.compile("refund"),
            re.compile("never undone"),
        ]
    )
    pivot = orders.get_by_test_id("pivot")
    expect(pivot).to_have_count(1)
    charge = orders.locator('[data-testid="definition-step"][data-step="charge_payment"]')
    expect(charge.get_by_test_id("pivot")).to_be_visible()

    choreo = page.locator('[data-testid="definition"][data-saga-type="create_experiment_choreo"]')
    expect(choreo).to_have_attribute("data-kind", "tracked")
    expect(choreo.get_by_test_id("definition-step")).to_have_count(4)
    allocate = choreo.locator('[data-testid="definition-step"][data-step="allocate_resources"]')
    expect(allocate).to_contain_text("resources.allocated on resources.events")
    expect(choreo.get_by_test_id("definition-compensation").first).to_contain_text(
        "experiment.deleted"
    )
    expect(choreo.get_by_test_id("definition-started")).to_have_text(
        "started by experiment.requested on experiments.requests"
    )
    # Its services start it with their own event: the start form offers only orchestrated types.
    offered = page.locator("#start-type option").evaluate_all("os => os.map((o) => o.value)")
    assert "create_experiment_choreo" not in offered and "create_order" in offered


def test_abort_button_compensates_a_running_saga(page: Page, system: SagaSystem) -> None:
    """Abort on a saga in progress is accepted, and the saga is then compensated with the reason,
    though the saga moved on (and the page redrew it) while the reason was being typed."""
    saga_id = new_id("abort")
    # held_order waits an hour at reserve_stock: only the abort can end it within this test.
    body = {"saga_type": "held_order", "payload": order({"reserve_stock": "timeout"})}
    status, answer = http_json("POST", f"{system.url}/sagas", {**body, "saga_id": saga_id})
    assert status == 202, answer
    system.wait_until(saga_id, lambda s: s["steps"][1]["status"] == "running")
    page.goto(f"{system.url}/?saga={saga_id}")
    detail = page.locator(f'#saga-detail[data-status="in_progress"][data-saga-id="{saga_id}"]')
    expect(detail).to_be_visible()
    expect(page.locator("#retry-button")).to_be_disabled()
    page.fill("#abort-reason", "customer called")
    # Meanwhile reserve_stock answers "retry": the saga sends attempt 2, which waits an hour.
    answer_retry = Reply(
        message_id=f"{saga_id}:reserve_stock:retry",
        in_reply_to=f"{saga_id}:reserve_stock:command:1",
        saga_id=saga_id,
        step="reserve_stock",
        kind="command",
        attempt=1,
        outcome="retry",
    )
    with ThreadPoolExecutor(1) as pool:  # playwright's event loop owns this thread
        reply = answer_retry.model_dump_json().encode()
        pool.submit(system.produce, system.catalog.replies, saga_id.encode(), [reply]).result(60)
    expect(page.locator("#timeline")).to_contain_text("2 attempts", timeout=20_000)
    expect(page.locator("#abort-reason")).to_have_value("customer called")
    page.click("#abort-button")
    expect(page.locator("#action-message")).to_have_text(re.compile("abort accepted"))
    expect(page.locator("#saga-detail").get_by_test_id("detail-status")).to_have_text(
        "compensated", timeout=40_000
    )
    expect(page.locator("#saga-error")).to_contain_text("customer called")
    assert_compensated_by_abort(system.get(saga_id) or {}, "customer called")


def test_start_form_starts_a_saga_and_opens_it(page: Page) -> None:
    """The start form posts the chosen type and payload, then shows the new saga completing."""
    saga_id = new_id("form")
    page.select_option("#start-type", "create_experiment")
    expect(page.locator("#start-payload")).to_have_value(re.compile("user_id"))
    page.fill("#start-saga-id", saga_id)
    page.click("#start-button")
    expect(page.locator("#start-message")).to_have_text(f"started {saga_id} (202)")
    detail = page.locator(f'#saga-detail[data-saga-id="{saga_id}"]')
    expect(detail.get_by_test_id("detail-status")).to_have_text("completed")
    expect(page.locator(f'[data-testid="saga-row"][data-saga-id="{saga_id}"]')).to_be_visible()


def test_start_form_shows_the_servers_refusal(page: Page) -> None:
    """A payload the worker refuses shows the worker's error message next to the form."""
    page.select_option("#start-type", "create_order")
    page.fill("#start-saga-id", "x" * 300)
    page.click("#start-button")
    expect(page.locator("#start-message")).to_have_text(re.compile(r"^refused: .*saga_id"))


def test_unreachable_worker_is_shown_in_a_banner(page: Page) -> None:
    """When the worker stops answering, a banner says so instead of the page going quiet."""
    expect(rows(page).first).to_be_visible()
    page.route("**/stats", lambda route: route.abort())
    expect(page.locator("#error-banner")).to_contain_text("worker unreachable")
    page.unroute("**/stats")
    expect(page.locator("#error-banner")).to_be_hidden()


def publish(system: SagaSystem, events: list[tuple[str, str | None, dict[str, Any]]]) -> None:
    """Publish domain events as the services would, from a thread of its own: playwright's event
    loop owns this one."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(system.produce_events, events).result(timeout=60)


def test_a_tracked_saga_shows_its_events_as_they_arrived_and_what_is_missing(
    page: Page, system: SagaSystem
) -> None:
    """Nobody orchestrates it: the page shows the events that came, the steps still awaited,
    after the deadline the steps that never reported, and the compensation events as they come."""
    saga_id = new_id("choreo")

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "saga_id": saga_id, **fields}

    publish(
        system,
        [
            ("experiments.requests", None, event("experiment.requested", **EXPERIMENT)),
            ("experiments.events", "exp", event("experiment.created")),
            ("resources.events", "gpu", event("resources.allocated", units=2)),
        ],
    )
    page.goto(f"{system.url}/?saga={saga_id}")
    detail = page.locator(f'#saga-detail[data-saga-id="{saga_id}"]')
    expect(detail.get_by_test_id("detail-mode")).to_have_text("tracked")
    names = ("create_experiment", "allocate_resources", "initialize_metrics", "notify_user")
    step = {name: detail.locator(f'[data-testid="step"][data-step="{name}"]') for name in names}
    expect(step["allocate_resources"]).to_have_attribute("data-status", "succeeded")
    expect(step["create_experiment"]).to_have_attribute("data-status", "succeeded")
    expect(step["allocate_resources"]).to_contain_text("arrived at +")
    expect(step["initialize_metrics"].get_by_test_id("missing-step")).to_have_text("awaited")
    expect(detail.get_by_test_id("history-detail")).to_contain_text(
        [" · resources.allocated on resources.events"]
    )

    # The definition's 10 s deadline passes: the steps that never reported are marked missing.
    expect(detail.get_by_test_id("detail-status")).to_have_text("compensating", timeout=30_000)
    expect(step["initialize_metrics"].get_by_test_id("missing-step")).to_have_text(
        "missing: metrics.initialized on metrics.events"
    )
    expect(step["notify_user"]).to_have_class(re.compile(r"\bmissing\b"))
    expect(step["create_experiment"]).not_to_have_class(re.compile(r"\bmissing\b"))
    expect(detail.get_by_test_id("compensation")).to_have_count(2)
    expect(step["allocate_resources"].get_by_test_id("compensation")).to_contain_text("awaited")

    publish(
        system,
        [
            ("resources.events", None, event("resources.released")),
            ("experiments.events", None, event("experiment.deleted")),
        ],
    )
    expect(detail.get_by_test_id("detail-status")).to_have_text("compensated")
    expect(step["allocate_resources"].get_by_test_id("compensation")).to_contain_text(
        "resources.released on resources.events · arrived at +"
    )
    expect(detail.get_by_test_id("history-event").last).to_have_attribute(
        "data-event", "saga_compensated"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard-tracked.png", full_page=True)
