"""Who may use an orchestrator worker's web views: bearer tokens, decided in this one place.

- `/health` (liveness and readiness probes) and `/` (the dashboard page, which asks for the token
  itself) are always open.
- A method that changes sagas (anything but GET, HEAD and OPTIONS: `POST /sagas`,
  `POST /sagas/{id}/abort`, `POST /sagas/{id}/retry`) needs `web_token`, when it is set.
- Every other read (`/sagas`, `/sagas/{id}`, `/stats`, `/definitions`, `/metrics`, and Faust's own
  `/router` and `/table` pages) needs `web_read_token` or `web_token`, when `web_read_token` is set.
  It is a deny-list by default: a view added later is protected without being listed here.
- Neither set: everything is open, as before the tokens existed.

Tokens are compared in constant time and never logged or echoed. Only the orchestrator worker
installs the middleware; the participants app serves `/health` alone. Workers ask each other for
their part of a list with `peer_headers`, and Faust's router forwards the caller's headers
(`Authorization` included) to the owner of a saga, so every worker must have the same tokens.
"""

from __future__ import annotations

import enum
import hmac
import os
from collections.abc import Mapping

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from saga_app.settings import Settings

log = structlog.get_logger("saga.web")

OPEN_PATHS = frozenset({"/", "/health"})
"""Paths nobody needs a token for: probes must work without secrets, and the page holds no data."""
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that cannot change a saga; every other method counts as a write."""


class Access(enum.Enum):
    """What an endpoint needs, before looking at which tokens are configured."""

    OPEN = "open"
    READ = "read"
    WRITE = "write"


def required_access(method: str, path: str) -> Access:
    """The access a request for `path` with `method` needs."""
    if method.upper() not in READ_METHODS:
        return Access.WRITE
    if path in OPEN_PATHS:
        return Access.OPEN
    return Access.READ


def required_tokens(method: str, path: str, settings: Settings) -> tuple[str, ...]:
    """The tokens that open this request under these settings; empty when it needs none."""
    access = required_access(method, path)
    if access is Access.WRITE and settings.web_token:
        return (settings.web_token,)
    if access is Access.READ and settings.web_read_token:
        return tuple(t for t in (settings.web_read_token, settings.web_token) if t)
    return ()


def _matches(given: str, tokens: tuple[str, ...]) -> bool:
    """Constant-time comparison against each token (bytes, so any character is allowed)."""
    wanted = given.encode()
    found = False
    for token in tokens:
        found |= hmac.compare_digest(wanted, token.encode())
    return found


def authorize(method: str, path: str, authorization: str | None, settings: Settings) -> str | None:
    """None when the request may go on; otherwise why not, in words fit for the 401 body."""
    tokens = required_tokens(method, path, settings)
    if not tokens:
        return None
    access = required_access(method, path)
    needed = (
        "the write token (SAGA_WEB_TOKEN)"
        if access is Access.WRITE
        else "the read token (SAGA_WEB_READ_TOKEN) or the write token (SAGA_WEB_TOKEN)"
    )
    what = f"{method.upper()} {path}"
    if not authorization or not authorization.strip():
        return f"missing token: {what} needs 'Authorization: Bearer <token>' with {needed}"
    scheme, _, given = authorization.strip().partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return f"the Authorization header must be 'Bearer <token>'; {what} needs {needed}"
    if _matches(given, tokens):
        return None
    read_token = settings.web_read_token
    if access is Access.WRITE and read_token and _matches(given, (read_token,)):
        return f"the read token cannot change sagas: {what} needs {needed}"
    return f"wrong token: {what} needs {needed}"


def bearer_header(token: str) -> dict[str, str]:
    """The header that presents `token`; none for an empty token."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def peer_headers(settings: Settings) -> dict[str, str]:
    """What a worker sends when it asks another worker for its part of a read."""
    return bearer_header(settings.web_read_token or settings.web_token)


def token_from_env(method: str, environ: Mapping[str, str] | None = None) -> str:
    """The token a client (CLI, demo, tests) sends for `method`, from `SAGA_WEB_*` variables.

    A write sends the write token; a read prefers the read token (the least it needs).
    """
    env = os.environ if environ is None else environ
    write = env.get("SAGA_WEB_TOKEN", "")
    if method.upper() not in READ_METHODS:
        return write
    return env.get("SAGA_WEB_READ_TOKEN", "") or write


def bearer_auth(settings: Settings) -> Middleware:
    """An aiohttp middleware that refuses, with 401, any request `authorize` refuses."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = authorize(
            request.method, request.path, request.headers.get("Authorization"), settings
        )
        if refusal is None:
            return await handler(request)
        log.info("web_request_refused", method=request.method, path=request.path, reason=refusal)
        challenge = 'Bearer realm="kafka-saga"'
        if request.headers.get("Authorization"):
            challenge += ', error="invalid_token"'
        return web.json_response(
            {"error": refusal}, status=401, headers={"WWW-Authenticate": challenge}
        )

    return check
