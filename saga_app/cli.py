"""The `saga` command: run a worker or the example participants, start a saga, read one."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence

import faust

from saga_app.logs import configure_logging, stdlib_logging_config
from saga_app.settings import Settings
from saga_app.web_auth import bearer_header, token_from_env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="saga", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("worker", help="run an orchestrator worker (run several to scale out)")
    commands.add_parser("participants", help="run the example participants")
    start = commands.add_parser("start", help="start a saga by producing to saga.requests")
    start.add_argument("saga_type")
    start.add_argument("--payload", default="{}", help="the saga payload as a JSON object")
    start.add_argument("--saga-id", help="defaults to a new uuid")
    status = commands.add_parser("status", help="show a saga as the web view has it")
    status.add_argument("saga_id")
    status.add_argument("--url", help="a worker's web address (default: this host's SAGA_WEB_PORT)")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    if args.command == "worker":
        return run_worker(settings)
    if args.command == "participants":
        return run_participants(settings)
    if args.command == "start":
        return start_saga(settings, args.saga_type, args.payload, args.saga_id)
    return show_status(args.url or settings.web_url, args.saga_id, token_from_env("GET"))


def _run_faust(app: faust.App, settings: Settings) -> int:

    from saga_app.topology import ensure_topics

    asyncio.run(ensure_topics(settings))
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        logging_config=stdlib_logging_config(settings.log_level, settings.log_format),
        quiet=True,
    )
    worker.execute_from_commandline()
    return 0


def run_worker(settings: Settings) -> int:
    from saga_app.app import SagaWorker

    configure_logging(settings.log_level, settings.log_format)
    return _run_faust(SagaWorker(settings).app, settings)


def run_participants(settings: Settings) -> int:
    from participants.app import ParticipantsWorker

    configure_logging(settings.log_level, settings.log_format)
    return _run_faust(ParticipantsWorker(settings).app, settings)


def start_saga(settings: Settings, saga_type: str, payload: str, saga_id: str | None) -> int:
    from saga_app.client import SagaClient

    try:
        data = json.loads(payload)
    except ValueError as e:
        print(f"--payload is not valid JSON: {e}", file=sys.stderr)
        return 2
    if not isinstance(data, dict):
        print('--payload must be a JSON object, e.g. \'{"customer_id": "c1"}\'', file=sys.stderr)
        return 2
    saga_id = saga_id or str(uuid.uuid4())

    async def send() -> None:
        async with SagaClient(settings) as client:
            await client.start(saga_type, data, saga_id=saga_id)

    asyncio.run(send())
    print(saga_id)
    return 0


def show_status(base_url: str, saga_id: str, token: str = "") -> int:
    """Print the saga; `token` (from SAGA_WEB_READ_TOKEN or SAGA_WEB_TOKEN) goes as a bearer."""
    url = f"{base_url.rstrip('/')}/sagas/{saga_id}"
    request = urllib.request.Request(url, headers=bearer_header(token))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(json.dumps(json.loads(response.read()), indent=2))
            return 0
    except urllib.error.HTTPError as e:
        print(f"{e.code}: {e.read().decode(errors='replace')}", file=sys.stderr)
        if e.code == 401:
            hint = "set SAGA_WEB_READ_TOKEN or SAGA_WEB_TOKEN to the worker's token"
            print(hint, file=sys.stderr)
    except urllib.error.URLError as e:
        print(
            f"cannot reach the worker at {base_url} ({e.reason}); is `saga worker` running?",
            file=sys.stderr,
        )
    return 1


if __name__ == "__main__":
    sys.exit(main())
