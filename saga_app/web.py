"""The worker's web views (DESIGN.md, "Web"): read a saga, start/abort/retry one, health, metrics.

A saga is read on the worker that owns it: `GET /sagas/{id}` is routed there by Faust using the
table's raw-bytes key, the same bytes the topics are keyed by. Writes never touch the table: they
become messages on `saga.requests`, which the owning agent applies.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from saga_app.sagas import DEFINITIONS
from topics import MAX_MESSAGE_BYTES, AbortSaga, RetrySaga, StartSaga

if TYPE_CHECKING:
    from saga_app.app import SagaWorker


class BadRequest(Exception):
    """The request cannot be accepted; the message says what to change."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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


def describe_validation(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}"
        for item in error.errors()
    )


def install_views(worker: SagaWorker) -> None:
    """Register the views on the worker's Faust app."""
    app = worker.app
    catalog = worker.catalog
    publish = worker.orchestrator.publisher.publish

    def error(view: View, status: int, message: str) -> Response:
        return view.json({"error": message}, status=status)

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            ready, reason = worker.is_ready()
            body = {
                "status": "ok" if ready else "unavailable",
                "reason": reason,
                "partitions": sorted(worker.owned_partitions()),
            }
            return self.json(body, status=200 if ready else 503)

    @app.page("/definitions")
    class Definitions(View):
        async def get(self, request: Request) -> Response:
            return self.json([d.describe() for d in DEFINITIONS.values()])

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(
                generate_latest(worker.metrics.registry), content_type=CONTENT_TYPE_LATEST
            )

    @app.page("/sagas")
    class Sagas(View):
        async def post(self, request: Request) -> Response:
            try:
                body = await read_json_object(self, request)
                start = StartSaga.model_validate({**body, "type": "start"})
            except BadRequest as e:
                return error(self, e.status, str(e))
            except ValidationError as e:
                return error(self, 400, describe_validation(e))
            if start.saga_type not in DEFINITIONS:
                known = ", ".join(sorted(DEFINITIONS))
                return error(self, 400, f"unknown saga_type {start.saga_type!r}; known: {known}")
            saga_id = start.saga_id or str(uuid.uuid4())
            start = start.model_copy(update={"saga_id": saga_id})
            await publish(catalog.requests, catalog.key(saga_id), start.model_dump_json().encode())
            return self.json({"saga_id": saga_id}, status=202)

    @app.page("/sagas/{saga_id}")
    class Saga(View):
        # faust types view handlers without the match_info arguments it passes them
        @app.table_route(table=worker.table, match_info="saga_id")  # type: ignore[arg-type]
        async def get(self, request: Request, saga_id: str) -> Response:
            raw = worker.repository.get_raw(saga_id)
            if raw is None:
                return error(self, 404, f"no saga with id {saga_id!r}")
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
