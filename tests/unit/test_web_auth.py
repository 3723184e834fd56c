"""Who may call which web view: the pure decision in `saga_app.web_auth`, endpoint by endpoint."""

from __future__ import annotations

import pytest

from saga_app.settings import Settings
from saga_app.web_auth import (
    Access,
    authorize,
    peer_headers,
    required_access,
    required_tokens,
    token_from_env,
)

WRITE, READ = "w-secret", "r-secret"
WRITES = [("POST", "/sagas"), ("POST", "/sagas/o-1/abort"), ("POST", "/sagas/o-1/retry")]
READS = [
    ("GET", "/sagas"),
    ("GET", "/sagas/o-1"),
    ("GET", "/stats"),
    ("GET", "/definitions"),
    ("GET", "/metrics"),
    ("GET", "/router"),
    ("GET", "/table/sagas"),
]
OPEN = [("GET", "/health"), ("GET", "/")]

write_only = Settings(web_token=WRITE)
both = Settings(web_token=WRITE, web_read_token=READ)
read_only = Settings(web_read_token=READ)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_endpoints_are_classified_as_open_read_or_write() -> None:
    """Health and the page are open, posts are writes, and every other GET is a read."""
    assert {required_access(m, p) for m, p in OPEN} == {Access.OPEN}
    assert {required_access(m, p) for m, p in READS} == {Access.READ}
    assert {required_access(m, p) for m, p in WRITES} == {Access.WRITE}
    assert required_access("DELETE", "/health") is Access.WRITE
    assert required_access("get", "/sagas") is Access.READ


@pytest.mark.parametrize(("method", "path"), WRITES + READS + OPEN)
def test_without_tokens_everything_is_open(method: str, path: str) -> None:
    """With neither token set, no request needs one, whatever header it carries."""
    for header in (None, "", bearer("anything"), "Basic abc"):
        assert authorize(method, path, header, Settings()) is None
    assert required_tokens(method, path, Settings()) == ()


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize("settings", [write_only, both], ids=["write-token", "both-tokens"])
def test_writes_need_the_write_token(method: str, path: str, settings: Settings) -> None:
    """A write with no token or a wrong one is refused with the reason; the write token opens it."""
    missing = authorize(method, path, None, settings)
    assert missing is not None and missing.startswith("missing token")
    assert "SAGA_WEB_TOKEN" in missing and path in missing
    wrong = authorize(method, path, bearer("nope"), settings)
    assert wrong is not None and wrong.startswith("wrong token")
    assert authorize(method, path, bearer(WRITE), settings) is None
    assert authorize(method, path, f"bearer  {WRITE} ", settings) is None


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_the_read_token_cannot_write(method: str, path: str) -> None:
    """The read token is refused on a write, with a message saying it only reads."""
    refusal = authorize(method, path, bearer(READ), both)
    assert refusal is not None and refusal.startswith("the read token cannot change sagas")


@pytest.mark.parametrize(("method", "path"), READS)
def test_reads_are_open_without_a_read_token(method: str, path: str) -> None:
    """With only the write token set, reads need no token, and a wrong one does not matter."""
    assert authorize(method, path, None, write_only) is None
    assert authorize(method, path, bearer("stale"), write_only) is None


@pytest.mark.parametrize(("method", "path"), READS)
@pytest.mark.parametrize("settings", [both, read_only], ids=["both-tokens", "read-token"])
def test_reads_need_a_token_when_the_read_token_is_set(
    method: str, path: str, settings: Settings
) -> None:
    """With the read token set, a read without a token or with a wrong one is refused."""
    missing = authorize(method, path, None, settings)
    assert missing is not None and missing.startswith("missing token")
    assert "SAGA_WEB_READ_TOKEN" in missing
    wrong = authorize(method, path, bearer("nope"), settings)
    assert wrong is not None and wrong.startswith("wrong token")
    assert authorize(method, path, bearer(READ), settings) is None


@pytest.mark.parametrize(("method", "path"), READS)
def test_the_write_token_reads_too(method: str, path: str) -> None:
    """A request carrying the write token may read, even when a read token is set."""
    assert authorize(method, path, bearer(WRITE), both) is None


@pytest.mark.parametrize(("method", "path"), OPEN)
@pytest.mark.parametrize("settings", [write_only, both, read_only])
def test_health_and_the_page_stay_open(method: str, path: str, settings: Settings) -> None:
    """Probes and the dashboard page need no token, whichever tokens are set."""
    assert authorize(method, path, None, settings) is None


def test_writes_are_open_when_only_the_read_token_is_set() -> None:
    """A read token alone protects the reads and leaves the writes as they were."""
    assert authorize("POST", "/sagas", None, read_only) is None


@pytest.mark.parametrize("header", ["Basic dXNlcjpwdw==", "Bearer", "Bearer   ", "w-secret"])
def test_a_header_that_is_not_a_bearer_token_is_named(header: str) -> None:
    """An Authorization header of another scheme or without a token says the expected form."""
    refusal = authorize("POST", "/sagas", header, both)
    assert refusal is not None and "must be 'Bearer <token>'" in refusal


def test_refusals_never_echo_a_token() -> None:
    """No refusal message contains the configured tokens or the one presented."""
    for header in (None, bearer("guess-123"), bearer(READ), "Basic guess-123"):
        for method, path in WRITES + READS:
            refusal = authorize(method, path, header, both) or ""
            assert WRITE not in refusal and READ not in refusal and "guess-123" not in refusal


def test_non_ascii_tokens_compare_without_error() -> None:
    """Tokens are compared as bytes, so a non-ASCII token or guess is just right or wrong."""
    settings = Settings(web_token="clé-✓")
    assert authorize("POST", "/sagas", bearer("clé-✓"), settings) is None
    assert authorize("POST", "/sagas", bearer("cle-x"), settings) is not None
    assert authorize("POST", "/sagas", bearer("ü"), Settings(web_token="u")) is not None


def test_tokens_come_from_the_environment_and_stay_out_of_repr() -> None:
    """SAGA_WEB_TOKEN and SAGA_WEB_READ_TOKEN are read as settings, and repr hides them."""
    settings = Settings.from_env({"SAGA_WEB_TOKEN": WRITE, "SAGA_WEB_READ_TOKEN": READ})
    assert (settings.web_token, settings.web_read_token) == (WRITE, READ)
    assert WRITE not in repr(settings) and READ not in repr(settings)
    assert Settings.from_env({}).web_token == ""


def test_workers_and_clients_present_the_least_token_that_reads() -> None:
    """Peers and clients read with the read token when there is one, and write with the other."""
    assert peer_headers(both) == {"Authorization": bearer(READ)}
    assert peer_headers(write_only) == {"Authorization": bearer(WRITE)}
    assert peer_headers(Settings()) == {}
    env = {"SAGA_WEB_TOKEN": WRITE, "SAGA_WEB_READ_TOKEN": READ}
    assert (token_from_env("GET", env), token_from_env("POST", env)) == (READ, WRITE)
    assert token_from_env("GET", {"SAGA_WEB_TOKEN": WRITE}) == WRITE
    assert token_from_env("POST", {}) == ""
