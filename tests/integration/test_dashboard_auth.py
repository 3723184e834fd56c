"""The dashboard against a worker with both tokens set, in a real headless browser (Debian's
chromium driven by playwright): it asks for the token, refuses a wrong one with a message, works
with the right one and keeps it for the tab, across reloads."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.integration.saga_system import SagaSystem
from tests.integration.test_dashboard import headless_chromium

EXAMPLE_TYPES = 4
"""create_experiment, create_experiment_choreo, create_order and create_run."""
WRITE_TOKEN = f"w-{uuid.uuid4().hex}"
READ_TOKEN = f"r-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SagaSystem]:
    workdir: Path = tmp_path_factory.mktemp("dashboard-auth")
    running = SagaSystem(
        kafka_bootstrap,
        workdir,
        f"da{uuid.uuid4().hex[:8]}.",
        web_token=WRITE_TOKEN,
        web_read_token=READ_TOKEN,
    )
    try:
        yield running.start()
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser(system: SagaSystem) -> Iterator[Browser]:
    """Headless chromium, started after the system (whose start runs its own event loop)."""
    yield from headless_chromium()


@pytest.fixture
def page_errors() -> list[str]:
    """Uncaught exceptions in the page (the refused requests' console lines are expected)."""
    return []


@pytest.fixture
def page(system: SagaSystem, browser: Browser, page_errors: list[str]) -> Iterator[Page]:
    """A fresh tab (so an empty sessionStorage) on the dashboard."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    opened = context.new_page()
    opened.on("pageerror", lambda error: page_errors.append(str(error)))
    opened.goto(f"{system.url}/")
    yield opened
    context.close()


def enter_token(page: Page, token: str) -> None:
    expect(page.locator("#token-panel")).to_be_visible()
    page.fill("#token-input", token)
    page.click("#token-button")


def start_experiment(page: Page) -> str:
    saga_id = f"auth-form-{uuid.uuid4().hex[:8]}"
    page.select_option("#start-type", "create_experiment")
    page.fill("#start-saga-id", saga_id)
    page.click("#start-button")
    return saga_id


def test_the_page_asks_for_a_token_and_refuses_a_wrong_one(
    page: Page, page_errors: list[str]
) -> None:
    """Without a token the page asks for one; a wrong one is refused with the worker's reason."""
    expect(page.locator("#token-panel")).to_be_visible()
    expect(page.locator("#token-message")).to_contain_text("missing token")
    expect(page.get_by_test_id("definition")).to_have_count(0)
    enter_token(page, "not-the-token")
    expect(page.locator("#token-message")).to_have_text(
        re.compile(r"^The token was refused: wrong token")
    )
    expect(page.locator("#token-panel")).to_be_visible()
    expect(page.locator("#token-input")).to_have_value("")
    assert page.evaluate("sessionStorage.getItem('kafka-saga.token')") == "not-the-token"
    assert page_errors == []


def test_the_write_token_starts_a_saga_and_survives_a_reload(
    page: Page, page_errors: list[str]
) -> None:
    """With the write token the user starts a saga and sees it finish; a reload keeps the token."""
    enter_token(page, "not-the-token")
    expect(page.locator("#token-message")).to_contain_text("wrong token")
    enter_token(page, WRITE_TOKEN)
    expect(page.locator("#token-panel")).to_be_hidden()
    expect(page.get_by_test_id("definition")).to_have_count(EXAMPLE_TYPES)
    saga_id = start_experiment(page)
    expect(page.locator("#start-message")).to_have_text(f"started {saga_id} (202)")
    detail = page.locator(f'#saga-detail[data-saga-id="{saga_id}"]')
    expect(detail.get_by_test_id("detail-status")).to_have_text("completed")
    row = page.locator(f'[data-testid="saga-row"][data-saga-id="{saga_id}"]')
    expect(row).to_be_visible()

    page.reload()
    expect(row).to_be_visible()
    expect(page.locator("#token-panel")).to_be_hidden()
    expect(page.locator("#error-banner")).to_be_hidden()
    assert page_errors == []


def test_the_read_token_shows_sagas_but_a_start_asks_for_the_write_token(
    page: Page, page_errors: list[str]
) -> None:
    """The read token shows the sagas; a start then asks for the write token and goes on with it."""
    enter_token(page, READ_TOKEN)
    expect(page.locator("#token-panel")).to_be_hidden()
    expect(page.get_by_test_id("definition")).to_have_count(EXAMPLE_TYPES)
    saga_id = start_experiment(page)
    expect(page.locator("#token-message")).to_contain_text("the read token cannot change sagas")
    enter_token(page, WRITE_TOKEN)
    expect(page.locator("#start-message")).to_have_text(f"started {saga_id} (202)")
    expect(page.locator(f'[data-testid="saga-row"][data-saga-id="{saga_id}"]')).to_be_visible()
    assert page_errors == []
