"""The `saga` command: run a worker or participants, start a saga, read one, write the schemas."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
import structlog
from aiokafka.errors import KafkaError

from saga_app.collector import tune_for_records
from saga_app.errors import SagaError, SagaModuleError
from saga_app.logs import configure_logging, stdlib_logging_config
from saga_app.registry import EXAMPLES as EXAMPLE_SAGAS
from saga_app.registry import load_sagas
from saga_app.settings import Settings
from saga_app.topology import (
    TopicPlan,
    ensure_topics,
    participant_topics,
    service_topics,
    worker_topics,
)
from saga_app.web_auth import bearer_header, token_from_env
from topics.schemas import write_schemas

EXAMPLE_PARTICIPANTS = "participants:EXAMPLES"
EXAMPLE_SERVICES = "participants.choreography:SERVICES"
log = structlog.get_logger("saga.cli")

PREPARE_TIMEOUT = 30.0
"""Seconds for creating and checking the topics once a broker has answered."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="saga", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser(
        "worker", help="run an orchestrator worker (run several to scale out)"
    )
    worker.add_argument(
        "--sagas",
        help="modules whose top-level SagaDefinitions to run, comma-separated "
        "(default: $SAGA_SAGAS, else the example sagas)",
    )
    participant = commands.add_parser(
        "participant", help="run participants of your own: module:attribute of a Participant"
    )
    participant.add_argument("specs", nargs="+", metavar="MODULE:ATTRIBUTE")
    participant.add_argument(
        "--simulate", action="store_true", help="honour `simulate` hooks in payloads (demos, tests)"
    )
    commands.add_parser("participants", help="run the example participants (simulate hooks on)")
    service = commands.add_parser(
        "service", help="run choreography services of your own: module:attribute of a Service"
    )
    service.add_argument("specs", nargs="+", metavar="MODULE:ATTRIBUTE")
    service.add_argument(
        "--simulate", action="store_true", help="honour `simulate` hooks in events (demos, tests)"
    )
    commands.add_parser(
        "services", help="run the example choreography services (simulate hooks on)"
    )
    start = commands.add_parser("start", help="start a saga by producing to saga.requests")
    start.add_argument("saga_type", nargs="?", help="omit it to list what the worker runs")
    start.add_argument("--payload", default="{}", help="the saga payload as a JSON object")
    start.add_argument("--saga-id", help="defaults to a new uuid")
    start.add_argument("--url", help="a worker's web address, to check the saga type")
    publish = commands.add_parser(
        "publish", help="publish a domain event as a service would (tracked sagas follow them)"
    )
    publish.add_argument("topic", help="the topic as saga definitions name it")
    publish.add_argument("event", help='the event as a JSON object, e.g. \'{"type": "x.done"}\'')
    publish.add_argument("--key", help="the record key (default: none)")
    status = commands.add_parser("status", help="show a saga as the web view has it")
    status.add_argument("saga_id")
    status.add_argument("--url", help="a worker's web address (default: this host's SAGA_WEB_PORT)")
    schema = commands.add_parser("schema", help="write a JSON Schema per message type")
    schema.add_argument(
        "--out", type=Path, default=Path("schemas"), help="folder (default: schemas)"
    )
    args = parser.parse_args(argv)

    if os.getcwd() not in sys.path:  # your modules are found from the folder you run in
        sys.path.insert(0, os.getcwd())
    try:
        settings = Settings.from_env()
    except ValueError as e:
        print(f"saga: {e}", file=sys.stderr)
        return 2
    if args.command == "status":
        return show_status(args.url or settings.web_url, args.saga_id, token_from_env("GET"))
    if args.command == "schema":
        for path in write_schemas(args.out):
            print(path)
        return 0
    try:
        if args.command == "worker":
            sagas = args.sagas if args.sagas is not None else settings.sagas
            return run_worker(settings, [m.strip() for m in sagas.split(",") if m.strip()])
        if args.command == "participant":
            return run_participants(settings, args.specs, simulate=args.simulate)
        if args.command == "participants":
            return run_participants(settings, [EXAMPLE_PARTICIPANTS], simulate=True)
        if args.command == "service":
            return run_services(settings, args.specs, simulate=args.simulate)
        if args.command == "services":
            return run_services(settings, [EXAMPLE_SERVICES], simulate=True)
        if args.command == "publish":
            return publish_event(settings, args.topic, args.event, args.key)
        url = args.url or settings.web_url
        return start_saga(settings, url, args.saga_type, args.payload, args.saga_id)
    except SagaModuleError as e:
        print(f"saga {args.command}: {e}", file=sys.stderr)
        return 2
    except (SagaError, KafkaError, TimeoutError) as e:
        print(f"saga {args.command}: cannot start: {str(e) or type(e).__name__}", file=sys.stderr)
        return 1


def prepare_cluster(settings: Settings, topics: TopicPlan) -> Settings:
    """The preflight before Faust starts: connect and log in (failing fast and clearly on a
    wrong password or an untrusted certificate), then create and check the topics.

    Returns the settings with the replication factor the topics got.
    """
    from saga_app.connection import check_connection

    async def prepare() -> Settings:
        await check_connection(settings)
        try:
            return await asyncio.wait_for(ensure_topics(settings, topics), PREPARE_TIMEOUT)
        except TimeoutError:
            raise TimeoutError(
                f"the cluster did not create and describe the topics within {PREPARE_TIMEOUT:g} s;"
                " check that its brokers are up, then start again"
            ) from None

    return asyncio.run(prepare())


def _run_faust(app: faust.App, settings: Settings) -> int:
    tune_for_records()
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        logging_config=stdlib_logging_config(settings.log_level, settings.log_format),
        quiet=True,
    )
    worker.execute_from_commandline()
    return 0


def run_worker(settings: Settings, modules: list[str]) -> int:
    """Run an orchestrator worker with the sagas of `modules` (none: the examples)."""
    from saga_app.app import SagaWorker

    configure_logging(settings.log_level, settings.log_format)
    sagas = load_sagas(modules or [EXAMPLE_SAGAS])
    loaded = [f"{d.name} v{d.version}" for d in sorted(sagas, key=lambda d: (d.name, d.version))]
    if modules:
        log.info("sagas_loaded", modules=modules, sagas=loaded)
    else:
        log.info(
            "sagas_loaded",
            modules=[EXAMPLE_SAGAS],
            sagas=loaded,
            note="no --sagas given: running the example sagas; --sagas mypkg.sagas runs yours",
        )
    settings = prepare_cluster(settings, worker_topics(settings, sagas))
    return _run_faust(SagaWorker(settings, sagas).app, settings)


def run_participants(settings: Settings, specs: list[str], *, simulate: bool) -> int:
    """Run the participants named by `module:attribute` specs in one process."""
    from saga_app.participant_app import ParticipantWorker, load_participants

    configure_logging(settings.log_level, settings.log_format)
    participants = load_participants(specs)
    names = [p.name for p in participants]
    log.info("participants_loaded", specs=specs, participants=names, simulate=simulate)
    settings = prepare_cluster(settings, participant_topics(settings, names))
    worker = ParticipantWorker(settings, participants, simulate=simulate or settings.simulate)
    return _run_faust(worker.app, settings)


def run_services(settings: Settings, specs: list[str], *, simulate: bool) -> int:
    """Run the choreography services named by `module:attribute` specs in one process."""
    from saga_app.service_app import ServiceWorker, load_services

    configure_logging(settings.log_level, settings.log_format)
    services = load_services(specs)
    log.info("services_loaded", specs=specs, services=[s.name for s in services], simulate=simulate)
    settings = prepare_cluster(settings, service_topics(settings, services))
    worker = ServiceWorker(settings, services, simulate=simulate or settings.simulate)
    return _run_faust(worker.app, settings)


def loaded_definitions(base_url: str) -> list[dict[str, Any]] | None:
    """What the worker at `base_url` runs (`GET /definitions`), or None if it cannot be asked."""
    url = f"{base_url.rstrip('/')}/definitions"
    request = urllib.request.Request(url, headers=bearer_header(token_from_env("GET")))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            data = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, list) else None


def tracked_start_hint(definition: dict[str, Any]) -> str:
    """Why `saga start` refuses a tracked type (as POST /sagas does), and what starts it."""
    return (
        f"{definition['name']} is a tracked saga: its services start it, not `saga start`; "
        f"publish its first event ({definition['starts_with']}) as they do"
    )


def start_saga(
    settings: Settings, url: str, saga_type: str | None, payload: str, saga_id: str | None
) -> int:
    """Produce a start request; first check the type against what the worker at `url` runs."""
    from saga_app.client import SagaClient

    definitions = loaded_definitions(url)
    runs = sorted(
        f"{d['name']} v{d['version']}"
        + (" (tracked: its services start it)" if d.get("kind") == "tracked" else "")
        for d in definitions or []
        if d.get("newest")
    )
    if saga_type is None:
        if definitions is None:
            print(f"cannot reach a worker at {url} to list its sagas (--url)", file=sys.stderr)
            return 1
        print("\n".join(runs) or "(no sagas loaded)")
        return 0
    if definitions is None:
        print(f"note: cannot reach a worker at {url}; not checking {saga_type!r}", file=sys.stderr)
    else:
        matching = [d for d in definitions if d["name"] == saga_type]
        if not matching:
            print(
                f"unknown saga type {saga_type!r}; the worker at {url} runs: {', '.join(runs)}",
                file=sys.stderr,
            )
            return 2
        if matching[0].get("kind") == "tracked":
            print(tracked_start_hint(matching[0]), file=sys.stderr)
            return 2
    data = json_object(payload, "--payload", '{"customer_id": "c1"}')
    if data is None:
        return 2
    saga_id = saga_id or str(uuid.uuid4())

    async def send() -> None:
        from saga_app.connection import check_connection

        await check_connection(settings)
        async with SagaClient(settings) as client:
            await client.start(saga_type, data, saga_id=saga_id)

    asyncio.run(send())
    print(saga_id)
    return 0


def publish_event(settings: Settings, topic: str, event: str, key: str | None) -> int:
    """Produce one domain event to `topic` (with the topic prefix), as a service would."""
    from saga_app.client import SagaClient
    from saga_app.connection import check_connection

    data = json_object(event, "the event", '{"type": "parcel.packed", "order_id": "o-7"}')
    if data is None:
        return 2

    async def send() -> None:
        await check_connection(settings)
        async with SagaClient(settings) as client:
            await client.publish(topic, data, key=key)

    asyncio.run(send())
    print(f"published {data.get('type', 'an event')} to {settings.catalog.domain(topic)}")
    return 0


def json_object(text: str, what: str, example: str) -> dict[str, Any] | None:
    """`text` parsed as a JSON object, or None after saying what is wrong with it."""
    try:
        data = json.loads(text)
    except ValueError as e:
        print(f"{what} is not valid JSON: {e}", file=sys.stderr)
        return None
    if not isinstance(data, dict):
        print(f"{what} must be a JSON object, e.g. '{example}'", file=sys.stderr)
        return None
    return data


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
