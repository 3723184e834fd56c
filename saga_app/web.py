"""The worker's web views (DESIGN.md, "Web"): read, list, start, abort and re-drive sagas.

Reads go where the data is. `GET /sagas/{id}` is routed to the worker owning the saga, using the
table's raw-bytes key, which are the same bytes the topics are keyed by. `GET /sagas` and
`GET /stats` ask every worker for its own part and merge the answers. A 503 caused by a rebalance
is retried for a while rather than shown. Writes never touch the table: they become messages on
`saga.requests`, and the owning agent applies them. Who may call which view is decided in
`saga_app/web_auth.py`, by a middleware in front of all of them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from aiohttp import ClientError
from faust.exceptions import SameNode
from faust.web import Request, Response, View
from faust.web.exceptions import ServiceUnavailable
from pydantic import ValidationError

from saga_app.errors import UnknownSagaType
from saga_app.listing import merge_stats, newest_first
from saga_app.settings import format_duration
from saga_app.state import SagaStatus
from saga_app.tracked import TrackedSagaDefinition
from saga_app.web_auth import peer_headers
from topics import MAX_MESSAGE_BYTES, AbortSaga, RetrySaga, StartSaga

if TYPE_CHECKING:
    from saga_app.app import SagaWorker

REBALANCE_PATIENCE = 15.0
"""Seconds a request waits for a rebalance to settle before answering 503."""
MAX_LIST_LIMIT = 1000
STATUSES = frozenset(s.value for s in SagaStatus)


class BadRequest(Exception):
    """The request cannot be accepted; the message says what to change."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Unavailable(Exception):
    """A worker that should answer cannot right now (rebalancing, restarting)."""


class PeerRefused(Exception):
    """Another worker refused this worker's token: the workers are not configured alike."""


async def read_json_object(view: View, request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a `BadRequest` that says what is wrong with it."""
    body = await view.read_request_content(request)
    if len(body) > MAX_MESSAGE_BYTES:
        raise BadRequest(f"body is {len(body)} bytes, over the {MAX_MESSAGE_BYTES} limit", 413)
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def list_filters(query: Any) -> tuple[str | None, str | None, int]:
    """`status`, `saga_type` and `limit` from a query string, checked."""
    status = query.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(sorted(STATUSES))}, got {status!r}")
    saga_type = query.get("saga_type") or None
    raw_limit = query.get("limit") or "100"
    try:
        limit = int(raw_limit)
    except ValueError:
        raise BadRequest(f"limit must be an integer, got {raw_limit!r}") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
    return status, saga_type, limit


def describe_validation(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}"
        for item in error.errors()
    )


async def patiently(call: Callable[[], Awaitable[Any]]) -> Any:
    """Retry `call` while it raises `Unavailable`, for up to `REBALANCE_PATIENCE` seconds."""
    deadline = time.monotonic() + REBALANCE_PATIENCE
    while True:
        try:
            return await call()
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)  # let the rebalance settle before asking again


def tracked_start(definition: TrackedSagaDefinition) -> str:
    """Why a tracked saga cannot be started here, and how it is started."""
    return (
        f"{definition.name} is a tracked saga: nobody starts it here, its services do; it "
        f"begins with its first event (e.g. {definition.first_event})"
    )


def _unknown_saga_hint(retention: float, events_topic: str) -> str:
    """What a 404 for a saga adds: a saga that finished may have been deleted since."""
    if retention <= 0:
        return ""
    return (
        f"; a finished saga is deleted {format_duration(retention)} after it finished "
        f"(SAGA_RETENTION), and its history stays on {events_topic}"
    )


def install_views(worker: SagaWorker) -> None:
    """Register the views on the worker's Faust app."""
    app = worker.app
    catalog = worker.catalog
    listing = worker.orchestrator.listing
    publish = worker.orchestrator.publisher.publish
    own_url = str(app.conf.canonical_url).rstrip("/")
    headers = peer_headers(worker.settings)
    unknown_saga = _unknown_saga_hint(worker.settings.retention, catalog.events)

    def error(view: View, status: int, message: str) -> Response:
        return view.json({"error": message}, status=status)

    def worker_urls() -> list[str]:
        """Every worker of the cluster, as the group's assignment knows them."""
        urls = {str(u).rstrip("/") for u in app.assignor.tables_metadata()}
        return sorted(urls | {own_url})

    async def ask(url: str, path: str, params: dict[str, str]) -> Any:
        """GET a local-only view of another worker."""
        try:
            async with app.http_client.get(
                f"{url}{path}", params=params, headers=headers
            ) as response:
                if response.status == 401:
                    raise PeerRefused(
                        f"{url} refused this worker's token: give every worker the same "
                        "SAGA_WEB_TOKEN and SAGA_WEB_READ_TOKEN"
                    )
                if response.status != 200:
                    raise Unavailable(f"{url} answered {response.status}")
                return await response.json()
        except (TimeoutError, ClientError) as e:
            raise Unavailable(f"{url} unreachable: {e}") from None

    async def from_every_worker(
        path: str, params: dict[str, str], local: Callable[[], Any]
    ) -> list[Any]:
        async def one(url: str) -> Any:
            if url == own_url:
                ready, reason = worker.is_ready()
                if not ready:
                    raise Unavailable(reason)
                return local()
            return await ask(url, path, {**params, "local": "1"})

        async def attempt() -> list[Any]:
            return list(await asyncio.gather(*(one(url) for url in worker_urls())))

        result: list[Any] = await patiently(attempt)
        return result

    @app.page("/")
    class Dashboard(View):
        async def get(self, request: Request) -> Response:
            page = files("saga_app").joinpath("dashboard/index.html").read_bytes()
            return self.bytes(page, content_type="text/html")

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            ready, reason = worker.is_ready()
            body = {
                "status": "ok" if ready else "unavailable",
                "reason": reason,
                "partitions": sorted(worker.owned_partitions()),
                "sagas": len(listing),
                "delivery_failures": worker.publisher.failures,
            }
            return self.json(body, status=200 if ready else 503)

    @app.page("/definitions")
    class Definitions(View):
        async def get(self, request: Request) -> Response:
            return self.json(worker.sagas.describe())

    @app.page("/stats")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            if request.query.get("local"):
                return self.json(listing.stats())
            try:
                parts = await from_every_worker("/stats", {}, listing.stats)
            except Unavailable as e:
                return error(self, 503, f"cannot count sagas: {e}")
            except PeerRefused as e:
                return error(self, 502, f"cannot count sagas: {e}")
            return self.json(merge_stats(parts))

    @app.page("/sagas")
    class Sagas(View):
        async def get(self, request: Request) -> Response:
            try:
                status, saga_type, limit = list_filters(request.query)
            except BadRequest as e:
                return error(self, e.status, str(e))
            if request.query.get("local"):
                return self.json(listing.query(status, saga_type, limit))
            params = {k: v for k, v in request.query.items() if k in {"status", "saga_type"}}
            params["limit"] = str(limit)
            try:
                parts = await from_every_worker(
                    "/sagas", params, lambda: listing.query(status, saga_type, limit)
                )
            except Unavailable as e:
                return error(self, 503, f"cannot list sagas: {e}")
            except PeerRefused as e:
                return error(self, 502, f"cannot list sagas: {e}")
            merged = [summary for part in parts for summary in part]
            merged.sort(key=newest_first, reverse=True)
            return self.json(merged[:limit])

        async def post(self, request: Request) -> Response:
            try:
                body = await read_json_object(self, request)
                start = StartSaga.model_validate({**body, "type": "start"})
            except BadRequest as e:
                return error(self, e.status, str(e))
            except ValidationError as e:
                return error(self, 400, describe_validation(e))
            try:
                definition = worker.sagas.newest(start.saga_type)
            except UnknownSagaType as e:
                return error(self, 400, str(e))
            if isinstance(definition, TrackedSagaDefinition):
                return error(self, 400, tracked_start(definition))
            saga_id = start.saga_id or str(uuid.uuid4())
            start = start.model_copy(update={"saga_id": saga_id})
            await publish(catalog.requests, catalog.key(saga_id), start.model_dump_json().encode())
            return self.json({"saga_id": saga_id}, status=202)

    @app.page("/sagas/{saga_id}")
    class Saga(View):
        async def get(self, request: Request, saga_id: str) -> Response:
            async def routed() -> Response:
                try:
                    # Faust's router forwards the caller's headers as they came, so the owner
                    # sees the same `Authorization` this worker's middleware already accepted.
                    response: Response = await app.router.route_req(
                        worker.table.name, saga_id, self.web, request
                    )
                except SameNode:
                    return self.local(saga_id)
                except (TimeoutError, ServiceUnavailable, ClientError) as e:
                    raise Unavailable(str(e)) from None
                if response.status == 503:
                    raise Unavailable("the owner is rebalancing")
                return response

            try:
                result: Response = await patiently(routed)
            except Unavailable as e:
                return error(self, 503, f"the cluster is rebalancing, try again: {e}")
            return result

        def local(self, saga_id: str) -> Response:
            ready, reason = worker.is_ready()
            if not ready:
                raise Unavailable(reason)
            raw = worker.repository.get_raw(saga_id)
            if raw is None:
                return error(self, 404, f"no saga with id {saga_id!r}{unknown_saga}")
            return self.bytes(raw, content_type="application/json")

    @app.page("/sagas/{saga_id}/abort")
    class Abort(View):
        async def post(self, request: Request, saga_id: str) -> Response:
            try:
                body = await read_json_object(self, request)
            except BadRequest as e:
                return error(self, e.status, str(e))
            reason = body.get("reason", "aborted by operator")
            if not isinstance(reason, str):
                return error(self, 400, "reason: must be a string")
            abort = AbortSaga(saga_id=saga_id, reason=reason)
            await publish(catalog.requests, catalog.key(saga_id), abort.model_dump_json().encode())
            return self.json({"saga_id": saga_id, "accepted": "abort"}, status=202)

    @app.page("/sagas/{saga_id}/retry")
    class Retry(View):
        async def post(self, request: Request, saga_id: str) -> Response:
            retry = RetrySaga(saga_id=saga_id)
            await publish(catalog.requests, catalog.key(saga_id), retry.model_dump_json().encode())
            return self.json({"saga_id": saga_id, "accepted": "retry"}, status=202)
