"""JSON for the errors aiohttp answers itself, so every 4xx of the API has the same shape."""

from __future__ import annotations

from typing import Any

from aiohttp import web


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Answer aiohttp's own errors (no such route, wrong method, body too large) in JSON too."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return web.json_response(
            {"error": f"{e.reason}: {request.method} {request.path}"}, status=e.status
        )
