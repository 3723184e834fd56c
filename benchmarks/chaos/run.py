"""The chaos run: a 3-broker cluster, workers and ledger-keeping participants, load and faults.

Everything runs as real processes, started with the project's own harness: `LocalKafka`
(tools/local_kafka.py) for the brokers, `SagaSystem` (tests/integration/saga_system.py) for the
workers and the participants, `Service` (tools/services.py) for each process. Sagas are started
at a steady rate through `SagaClient`; one consumer reads `saga.events` (progress, latency,
failover) and the participants' command topics (re-sent copies) while the faults run:

- `periodic` (the default, `make chaos`): kill -9 a worker every `kill_every` seconds and
  restart it `restart_delay` seconds later (round robin over the workers still in service);
  at about 30 % of the load kill -9 a broker and restart it `broker_down` seconds later; at
  about 50 % kill a worker for good; at about 70 % kill -9 the participants and restart them
  (each halfway between two worker kills).
- `once` (the test): one fault of each kind, spread over the load: a worker kill -9 and
  restart, the participants' kill -9 and restart, a worker killed for good, a broker kill -9.

Then it waits for every saga to finish (until `settle` seconds after the last start), reads each
saga's web view through a live worker, the ledgers and the events, and checks them (`check.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
for _path in (str(REPO), str(TOOLS)):  # the harness imports `services` and `local_kafka` bare
    if _path not in sys.path:
        sys.path.insert(0, _path)

import local_kafka  # noqa: E402
from services import Service, http_json  # noqa: E402

from benchmarks.chaos.check import (  # noqa: E402
    TERMINAL,
    EventRecord,
    Fault,
    Figures,
    SagaObservation,
    Verdict,
    check_saga,
    figures,
)
from benchmarks.chaos.ledger import LEDGER_DIR_ENV, read_ledgers  # noqa: E402
from benchmarks.chaos.plan import PARTICIPANT_ENV, PlannedSaga, make_plan  # noqa: E402
from benchmarks.scratch import scratch_dir  # noqa: E402
from saga_app.client import SagaClient  # noqa: E402
from saga_app.connection import aiokafka_options  # noqa: E402
from saga_app.topology import ORCHESTRATOR_APP, SAGA_TABLE, changelog  # noqa: E402
from tests.integration.saga_system import SagaSystem, orchestrator_offsets  # noqa: E402

PARTICIPANTS_SPEC = "benchmarks.chaos.ledger:PARTICIPANTS"
RESTART_PATIENCE = 180.0
"""Seconds a supervisor keeps starting a process that exits before it is ready."""
FaultKind = Literal["worker_restart", "worker_gone", "broker", "participants"]


@dataclass
class ChaosConfig:
    count: int = 5000
    """Sagas to start, cycling through the three example types."""
    rate: float = 25.0
    """Sagas started per second."""
    faults: Literal["periodic", "once"] = "periodic"
    kill_every: float = 10.0
    """Seconds between two worker kills (`periodic`)."""
    restart_delay: float = 1.0
    """Seconds a killed worker or participants process stays down before its restart."""
    broker_down: float = 10.0
    """Seconds the killed broker stays down."""
    settle: float = 120.0
    """Seconds after the last start by which every saga must have finished (else: lost)."""
    partitions: int = 6
    workers: int = 3
    seed: int = 0
    workdir: Path | None = None
    """Logs, data, ledgers and the report; default a fresh temporary folder (kept)."""
    progress_every: float = 5.0
    log_level: str = "info"
    show: int = 10
    """Problem sagas printed in full (all of them are in the report file)."""


@dataclass
class ChaosReport:
    figures: Figures
    verdicts: list[Verdict]
    faults: list[Fault]
    workdir: Path
    load_started_at: float
    """Wall time of the first start: fault times are shown relative to it."""
    details: list[dict[str, Any]]
    """Each lost or inconsistent saga in full: plan, view, ledger lines, events."""
    start_errors: dict[str, int]

    def problem_text(self, limit: int = 5) -> str:
        return "\n\n".join(_detail_text(d) for d in self.details[:limit])

    def rolled_back_spuriously(self) -> list[dict[str, Any]]:
        """The sagas that rolled back though their payloads asked for no failure: the faults'
        doing, as a rule (a step timed out across a failover), named so that they can be
        traced in the workers' logs."""
        return [
            {
                "saga_id": v.saga_id,
                "saga_type": v.saga_type,
                "scenario": v.scenario,
                "status": v.status,
                "extra_command_attempts": v.extra_command_attempts,
            }
            for v in self.verdicts
            if v.spurious_rollback
        ]


def say(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def fault_schedule(config: ChaosConfig, window: float) -> list[tuple[float, FaultKind]]:
    """(seconds after the first start, fault) pairs, in time order."""
    if config.faults == "once":
        # Apart, so each fault's effect can be told from the others'; the broker last, as its
        # restart is the slowest (and a process cannot start while a broker is down).
        return [
            (0.1 * window, "worker_restart"),
            (0.3 * window, "participants"),
            (0.5 * window, "worker_gone"),
            (0.7 * window, "broker"),
        ]

    def between_kills(share: float) -> float:  # halfway between two periodic worker kills
        return (int(share * window / config.kill_every) + 0.5) * config.kill_every

    plan: list[tuple[float, FaultKind]] = [
        (between_kills(0.3), "broker"),
        (between_kills(0.5), "worker_gone"),
        (between_kills(0.7), "participants"),
    ]
    ticks = itertools.count(1)
    while (at := next(ticks) * config.kill_every) < window:
        plan.append((at, "worker_restart"))
    return sorted(plan, key=lambda item: item[0])


class ChaosRun:
    """One run: owns the system's processes from `start()` to `stop()`."""

    def __init__(self, config: ChaosConfig, kafka: local_kafka.LocalKafka, workdir: Path) -> None:
        self.config = config
        self.kafka = kafka
        self.workdir = workdir
        self.ledger_dir = workdir / "ledger"
        self.run_id = f"chaos{uuid.uuid4().hex[:6]}"
        self.rng = random.Random(config.seed)
        self.plan = make_plan(config.count, self.run_id, config.seed)
        self.system = SagaSystem(
            kafka.bootstrap_servers,
            workdir,
            f"{self.run_id}.",
            partitions=config.partitions,
            workers=config.workers,
            env={**kafka.client_env(), "SAGA_LOG_LEVEL": config.log_level},
        )
        participant_env = {
            **self.system.env,
            **PARTICIPANT_ENV,
            LEDGER_DIR_ENV: str(self.ledger_dir),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        self.system.participants = Service(
            "participant",
            participant_env,
            workdir,
            name="participants",
            args=[PARTICIPANTS_SPEC, "--simulate"],
        )
        self.settings = self.system.settings
        self.catalog = self.system.catalog
        self.faults: list[Fault] = []
        self.started_at: dict[str, float] = {}
        self.start_failures: dict[str, str] = {}
        self.start_errors: Counter[str] = Counter()
        """Why a start request had to be sent again (it may have landed: starts are idempotent)."""
        self.events: list[EventRecord] = []
        self.events_by_saga: dict[str, list[EventRecord]] = defaultdict(list)
        self.finished: dict[str, str] = {}
        self.command_copies: Counter[str] = Counter()
        self.gone: set[str] = set()
        self.down: set[str] = set()
        self.broker_down: int | None = None
        self.participants_down = False
        self.partitions: dict[str, list[int]] = {}
        self._next_worker = itertools.cycle(self.system.workers)
        self._t0 = 0.0
        self.load_started_at = 0.0
        self.deadline = 0.0
        """Monotonic time by which every saga must be terminal: `settle` after the last start."""

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        say(
            f"starting {len(self.system.workers)} workers and the participants "
            f"({self.config.partitions} partitions, prefix {self.run_id}.) in {self.workdir}"
        )
        self.system.start()
        shares = self.system.wait_until_workers_share_partitions(timeout=120)
        for worker, owned in zip(self.system.workers, shares, strict=True):
            self.partitions[worker.name] = sorted(owned)
        say(f"ready: partitions {self.partitions}")

    def stop(self) -> None:
        services = [*self.system.workers, self.system.participants]
        with ThreadPoolExecutor(len(services)) as pool:
            list(pool.map(lambda s: s.stop(signal.SIGTERM, timeout=15), services))

    # ---------------------------------------------------------------- the run

    async def run(self) -> None:
        config = self.config
        window = config.count / config.rate
        schedule = fault_schedule(config, window)
        say(
            f"{config.count} sagas at {config.rate:g}/s ({window:.0f} s of load); faults: "
            + ", ".join(f"{kind} x{n}" for kind, n in Counter(kind for _, kind in schedule).items())
        )
        consumer = self._consumer()
        await consumer.start()
        background = [
            asyncio.create_task(self._consume(consumer)),
            asyncio.create_task(self._watch_partitions()),
            asyncio.create_task(self._progress()),
        ]
        try:
            self._t0, self.load_started_at = time.monotonic(), time.time()
            restarts: list[asyncio.Task[None]] = []
            load = asyncio.create_task(self._load())
            for at, kind in schedule:
                await _sleep_until(self._t0 + at)
                restarts.append(asyncio.create_task(self._inject(kind)))
            await load
            self.deadline = time.monotonic() + config.settle - self._since_last_start()
            await asyncio.gather(*restarts)
            say("load and faults done; waiting for the sagas to finish")
            while len(self.finished) < len(self.plan) and time.monotonic() < self.deadline:
                await asyncio.sleep(0.5)  # polling the consumer's tally
            await self._catch_up(consumer)
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await consumer.stop()

    def _since_last_start(self) -> float:
        last = max(self.started_at.values(), default=time.time())
        return time.time() - last

    async def _load(self) -> None:
        """Start the sagas at a steady rate; each start is retried until the broker takes it."""
        sends: list[asyncio.Task[None]] = []
        async with SagaClient(self.settings) as client:
            for i, saga in enumerate(self.plan):
                await _sleep_until(self._t0 + i / self.config.rate)  # pacing the load
                self.started_at[saga.saga_id] = time.time()
                sends.append(asyncio.create_task(self._send_start(client, saga)))
            await asyncio.gather(*sends)

    async def _send_start(self, client: SagaClient, saga: PlannedSaga) -> None:
        give_up = time.monotonic() + 60
        while True:
            try:
                await client.start(saga.saga_type, saga.payload, saga_id=saga.saga_id)
                return
            except Exception as e:  # a broker down: the same start again is a no-op if it landed
                self.start_errors[f"{type(e).__name__}: {e}"[:120]] += 1
                if time.monotonic() > give_up:
                    self.start_failures[saga.saga_id] = f"{type(e).__name__}: {e}"
                    return
                await asyncio.sleep(0.5)  # backoff before re-sending the start

    # ---------------------------------------------------------------- faults

    async def _inject(self, kind: FaultKind) -> None:
        try:
            if kind in ("worker_restart", "worker_gone"):
                await self._kill_worker(kind)
            elif kind == "broker":
                await self._kill_broker()
            else:
                await self._kill_participants()
        except Exception as e:  # a fault that could not be injected is reported, not fatal
            say(f"fault {kind} failed: {type(e).__name__}: {e}")
            self.faults.append(Fault(kind, "?", time.time(), error=f"{type(e).__name__}: {e}"))

    def _pick_worker(self) -> Service | None:
        """The next worker in service, marked down at once (two faults never pick the same)."""
        for _ in range(len(self.system.workers)):
            worker = next(self._next_worker)
            if worker.name not in self.gone and worker.name not in self.down:
                self.down.add(worker.name)
                return worker
        return None

    async def _kill_worker(self, kind: FaultKind) -> None:
        worker = self._pick_worker()
        if worker is None and kind == "worker_gone":  # not to be skipped: wait for a worker
            say(f"{kind}: every worker is down; waiting for one to be back")
            give_up = time.monotonic() + RESTART_PATIENCE
            while worker is None and time.monotonic() < give_up:
                await asyncio.sleep(0.5)  # polling the restarts in progress
                worker = self._pick_worker()
        if worker is None:
            say(f"{kind}: every worker is down or gone; skipped")
            return
        owned = await asyncio.to_thread(self._owned, worker) or self.partitions.get(worker.name, [])
        fault = Fault(kind, worker.name, time.time(), partitions=list(owned))
        self.faults.append(fault)
        await asyncio.to_thread(worker.stop, signal.SIGKILL)
        if kind == "worker_gone":
            self.gone.add(worker.name)
            self.down.discard(worker.name)
            say(f"kill -9 {worker.name} for good (it held partitions {owned})")
            return
        delay = self.config.restart_delay
        say(f"kill -9 {worker.name} (partitions {owned}); restart in {delay:g} s")
        await asyncio.sleep(self.config.restart_delay)  # the fault's planned downtime
        await self._restart(worker, fault)
        self.down.discard(worker.name)

    async def _kill_broker(self) -> None:
        node = self.rng.choice([n.node_id for n in self.kafka.node_list])
        # The stall is measured on the partitions a live worker holds: those of a worker that is
        # down or gone wait for it whatever the brokers do.
        healthy = sorted(
            {
                p
                for w in self.system.workers
                if w.name not in self.gone and w.name not in self.down
                for p in self.partitions.get(w.name, [])
            }
        )
        fault = Fault("broker", f"node-{node}", time.time(), healthy)
        self.faults.append(fault)
        self.broker_down = node
        await asyncio.to_thread(self.kafka.kill_node, node)
        say(f"kill -9 broker node {node}; restart in {self.config.broker_down:g} s")
        await asyncio.sleep(self.config.broker_down)  # the fault's planned downtime
        await self._supervise(
            fault,
            f"broker node {node}",
            lambda: asyncio.to_thread(self.kafka.start_node, node),
            reason=lambda e: (str(e).splitlines() or [""])[0],  # the rest: the nodes' log tails
            may_retry=lambda: True,
            ready=lambda waited: f"back after {waited:.1f} s",
        )
        self.broker_down = None

    async def _kill_participants(self) -> None:
        participants = self.system.participants
        fault = Fault("participants", participants.name, time.time())
        self.faults.append(fault)
        self.participants_down = True
        await asyncio.to_thread(participants.stop, signal.SIGKILL)
        say(f"kill -9 the participants; restart in {self.config.restart_delay:g} s")
        await asyncio.sleep(self.config.restart_delay)  # the fault's planned downtime
        await self._restart(participants, fault)
        self.participants_down = False

    async def _restart(self, service: Service, fault: Fault) -> None:
        """Start the process again, and again if it exits before it is ready."""

        async def start() -> None:
            service.start()
            await asyncio.to_thread(service.wait_ready)

        await self._supervise(
            fault,
            service.name,
            start,
            reason=lambda e: _last_line(str(e)),
            may_retry=lambda: service.process is not None and service.process.poll() is not None,
            ready=lambda waited: f"ready again {waited:.1f} s after its kill",
        )

    async def _supervise(
        self,
        fault: Fault,
        name: str,
        start: Callable[[], Awaitable[None]],
        reason: Callable[[Exception], str],
        may_retry: Callable[[], bool],
        ready: Callable[[float], str],
    ) -> None:
        """Start something again, and again while a start fails in a way a supervisor (systemd,
        Kubernetes) would retry, for at most RESTART_PATIENCE; `fault.starts` counts the starts."""
        fault.restarted_at = time.time()
        give_up = time.monotonic() + RESTART_PATIENCE
        while True:
            fault.starts += 1
            try:
                await start()
            except Exception as e:
                why = reason(e)
                if may_retry() and time.monotonic() < give_up:
                    say(f"{name} did not start ({why}); starting it again")
                    fault.failed_starts.append(why)
                    await asyncio.sleep(1.0)  # a supervisor's restart backoff
                    continue
                fault.error = f"{type(e).__name__}: {why}"
                say(f"{name} did not come back: {fault.error}")
                return
            fault.ready_at = time.time()
            say(f"{name} {ready(fault.ready_at - fault.at)}")
            return

    def _owned(self, worker: Service) -> list[int]:
        """The partitions a worker's `/health` says it holds now ([] when it cannot tell)."""
        try:
            status, body = http_json("GET", f"{worker.url}/health", timeout=1)
        except OSError:
            return []
        if status == 200 and isinstance(body, dict):
            return [int(p) for p in body.get("partitions") or []]
        return []

    async def _watch_partitions(self) -> None:
        """Remember each live worker's partitions, for the failover measurement of its kill."""
        while True:
            for worker in self.system.workers:
                if worker.name in self.gone or worker.name in self.down:
                    continue
                owned = await asyncio.to_thread(self._owned, worker)
                if owned:
                    self.partitions[worker.name] = owned
            await asyncio.sleep(1.0)  # polling interval of /health

    # ---------------------------------------------------------------- observing

    def _consumer(self) -> AIOKafkaConsumer:
        participants = sorted({s.participant for p in self.plan for s in p.definition.steps})
        topics = [self.catalog.events, *map(self.catalog.commands, participants)]
        return AIOKafkaConsumer(
            *topics,
            **aiokafka_options(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    self._take(tp.topic, record)

    def _take(self, topic: str, record: Any) -> None:
        try:
            value = json.loads(record.value)
        except (TypeError, ValueError):
            return
        if topic != self.catalog.events:
            self.command_copies[str(value.get("message_id"))] += 1
            return
        event = EventRecord(record.partition, record.offset, record.timestamp / 1000, value)
        self.events.append(event)
        saga_id = str(value.get("saga_id"))
        self.events_by_saga[saga_id].append(event)
        if value.get("status") in TERMINAL and saga_id not in self.finished:
            self.finished[saga_id] = str(value["status"])

    async def _catch_up(self, consumer: AIOKafkaConsumer) -> None:
        """Read every topic the consumer follows up to its end offsets as they are now."""
        tps = sorted(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            if not behind:
                return
            await asyncio.sleep(0.2)  # the consume task is reading

    async def _progress(self) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(self.config.progress_every)  # one progress line every few seconds
            statuses = Counter(self.finished.values())
            done = " ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
            workers = len(self.system.workers) - len(self.gone) - len(self.down)
            broker = f"node {self.broker_down} down" if self.broker_down else "3/3 up"
            say(
                f"+{time.monotonic() - started:4.0f}s started {len(self.started_at)}/"
                f"{len(self.plan)} finished {len(self.finished)} ({done or '-'}) | workers "
                f"{workers}/{len(self.system.workers)} up, brokers {broker}, participants "
                f"{'down' if self.participants_down else 'up'}, faults {len(self.faults)}"
            )

    # ---------------------------------------------------------------- the check

    def views(self) -> dict[str, dict[str, Any] | None]:
        """Each saga's web view through a live worker; unfinished ones are polled until the
        deadline."""
        live = [w for w in self.system.workers if w.process and w.process.poll() is None]
        token = self.system.read_token
        deadline = self.deadline

        def fetch(saga_id: str) -> dict[str, Any] | None:
            tries = 0
            while True:
                tries += 1
                worker = live[(hash(saga_id) + tries) % len(live)]
                try:
                    status, body = http_json(
                        "GET", f"{worker.url}/sagas/{saga_id}", timeout=10, token=token
                    )
                except OSError:
                    status, body = 0, None
                if status == 200 and isinstance(body, dict):
                    if body.get("status") in TERMINAL or time.monotonic() > deadline:
                        return body
                elif (status == 404 and tries >= 3) or (time.monotonic() > deadline and tries >= 3):
                    return None
                time.sleep(0.5)  # polling a saga that is not finished (or a busy worker)

        ids = [p.saga_id for p in self.plan]
        with ThreadPoolExecutor(8) as pool:
            return dict(zip(ids, pool.map(fetch, ids), strict=True))

    async def _read_topic(self, topic: str) -> list[Any]:
        """Every record of `topic` up to its end offsets as they are now."""
        consumer = AIOKafkaConsumer(
            topic,
            **aiokafka_options(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        out: list[Any] = []
        await consumer.start()
        try:
            deadline = time.monotonic() + 60
            while not consumer.assignment() and time.monotonic() < deadline:
                await consumer.getmany(timeout_ms=200)
            tps = sorted(consumer.assignment())
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while time.monotonic() < deadline and any(
                [await consumer.position(tp) < ends[tp] for tp in tps]
            ):
                for tp, records in (await consumer.getmany(*tps, timeout_ms=500)).items():
                    out.extend(r for r in records if r.offset < ends[tp])
        finally:
            await consumer.stop()
        return out

    async def _diagnostics(self) -> dict[str, Any]:
        """For the lost sagas: where their requests (start, and the sweeper's timeouts) and
        their states are in Kafka, their dead letters, and the orchestrator group's committed
        offsets."""
        where: dict[str, list[str]] = defaultdict(list)
        for r in await self._read_topic(self.catalog.requests):
            try:
                kind = json.loads(r.value).get("type")
            except (TypeError, ValueError, AttributeError):
                kind = "unreadable"
            if r.key is not None:
                where[r.key.decode(errors="replace")].append(f"p{r.partition}@{r.offset} {kind}")
        states: dict[str, list[str]] = defaultdict(list)
        for r in await self._read_topic(changelog(self.settings, ORCHESTRATOR_APP, SAGA_TABLE)):
            if r.key is None:
                continue
            try:
                state = json.loads(r.value) if r.value is not None else None
            except ValueError:
                state = None
            shown = (
                "tombstone"
                if state is None
                else (f"{state.get('status')} ({len(state.get('history') or [])} transitions)")
            )
            states[r.key.decode(errors="replace")].append(f"p{r.partition}@{r.offset} {shown}")
        dead: dict[str, list[str]] = defaultdict(list)
        for r in await self._read_topic(self.catalog.dlq):
            try:
                letter = json.loads(r.value)
            except (TypeError, ValueError):
                continue
            key = r.key.decode(errors="replace") if r.key else str(letter.get("key"))
            dead[key].append(
                f"{letter.get('topic')} p{letter.get('partition')}@{letter.get('offset')}: "
                f"{str(letter.get('error'))[:160]}"
            )
        committed = await orchestrator_offsets(self.settings, self.catalog.requests)
        return {
            "starts": dict(where),
            "states": dict(states),
            "dead_letters": dict(dead),
            "committed": committed,
        }

    def check(self) -> ChaosReport:
        say("reading the web views, the ledgers and the events")
        views = self.views()
        try:
            found = asyncio.run(self._diagnostics())
        except Exception as e:  # only diagnostics for lost sagas
            say(f"could not read saga.requests, the changelog or the group's offsets: {e}")
            found = {"starts": {}, "states": {}, "dead_letters": {}, "committed": {}}
        ledger = read_ledgers(self.ledger_dir)
        by_saga: dict[str, list[Any]] = defaultdict(list)
        for line in ledger.lines:
            by_saga[line.saga_id].append(line)
        verdicts = []
        details = []
        for planned in self.plan:
            obs = SagaObservation(
                planned,
                self.started_at.get(planned.saga_id),
                views.get(planned.saga_id),
                by_saga.get(planned.saga_id, []),
                sorted(self.events_by_saga.get(planned.saga_id, []), key=lambda e: e.offset),
            )
            verdict = check_saga(obs)
            verdicts.append(verdict)
            if verdict.inconsistent or not verdict.terminal or verdict.view_disagrees_with_events:
                detail = _detail(obs, verdict, self.start_failures.get(planned.saga_id))
                detail["start_records"] = found["starts"].get(planned.saga_id, [])
                detail["changelog"] = found["states"].get(planned.saga_id, [])
                detail["dead_letters"] = found["dead_letters"].get(planned.saga_id, [])
                detail["committed_offsets"] = found["committed"]
                details.append(detail)
        result = figures(verdicts, self.command_copies, ledger.lines, self.faults, self.events)
        report = ChaosReport(
            result,
            verdicts,
            self.faults,
            self.workdir,
            self.load_started_at,
            details,
            dict(self.start_errors),
        )
        if ledger.unreadable:
            say(f"note: {ledger.unreadable} ledger lines could not be read")
        self._write(report, ledger.files)
        return report

    def _write(self, report: ChaosReport, ledger_files: int) -> None:
        path = self.workdir / "chaos-report.json"
        path.write_text(
            json.dumps(
                {
                    "config": {k: str(v) for k, v in asdict(self.config).items()},
                    "run_id": self.run_id,
                    "figures": asdict(report.figures),
                    "faults": [asdict(f) for f in report.faults],
                    "ledger_files": ledger_files,
                    "start_errors": report.start_errors,
                    "problem_sagas": report.details,
                    "spurious_rollbacks": report.rolled_back_spuriously(),
                },
                indent=2,
                default=str,
            )
            + "\n"
        )


# --------------------------------------------------------------------------- reporting


def _detail(obs: SagaObservation, verdict: Verdict, start_failure: str | None) -> dict[str, Any]:
    view = obs.view or {}
    return {
        "saga_id": verdict.saga_id,
        "saga_type": verdict.saga_type,
        "scenario": verdict.scenario,
        "simulate": obs.planned.simulate,
        "expected": verdict.expected,
        "status": verdict.status,
        "events_status": verdict.terminal_statuses_in_events,
        "partition": obs.events[0].partition if obs.events else None,
        "started_at": obs.started_at,
        "start_failure": start_failure,
        "problems": verdict.problems,
        "steps": [
            {k: s.get(k) for k in ("name", "status", "attempts", "compensation_attempts", "error")}
            for s in view.get("steps") or []
        ],
        "error": view.get("error"),
        "ledger": [line.brief() for line in obs.ledger],
        "events": [event.brief() for event in obs.events],
        "history": [
            f"seq={h.get('seq')} {h.get('event')} {h.get('step') or ''}#{h.get('attempt')} "
            f"at={h.get('at')}"
            for h in view.get("history") or []
        ],
    }


def _detail_text(d: dict[str, Any]) -> str:
    lines = [
        f"saga {d['saga_id']} ({d['saga_type']}, {d['scenario']} {d['simulate']}): "
        f"status {d['status']}, expected {d['expected']}, events say {d['events_status']}, "
        f"partition {d['partition']}"
    ]
    lines += [f"  problem: {p}" for p in d["problems"]]
    if d["start_failure"]:
        lines.append(f"  start failed: {d['start_failure']}")
    if d["status"] not in TERMINAL:
        committed = d.get("committed_offsets", {})
        lines.append(
            f"  its requests in saga.requests: {d.get('start_records')}; the orchestrator "
            f"group's committed offsets: {dict(sorted(committed.items()))}"
        )
    if d["status"] not in TERMINAL:
        lines.append(f"  states in the sagas changelog: {d.get('changelog')}")
        lines.append(f"  its messages in saga.dlq: {d.get('dead_letters')}")
    if d["history"] and d["status"] not in TERMINAL:
        lines += [f"  history: {h}" for h in d["history"]]
    lines += [f"  step: {s}" for s in d["steps"]]
    lines += [f"  ledger: {line}" for line in d["ledger"]]
    lines += [f"  event: {e}" for e in d["events"]]
    return "\n".join(lines)


def _last_line(text: str) -> str:
    """The line of a process's log tail that says why it stopped, else its last line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "cannot start" in line or "[^Worker]: Error" in line or line.startswith("Traceback"):
            return line[:300]
    return lines[-1][:300] if lines else text[:300]


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _failover_text(values: list[float | None]) -> str:
    known = sorted(v for v in values if v is not None)
    unknown = len(values) - len(known)
    if not known:
        return f"n={len(values)}, none measured"
    text = f"n={len(values)} min {known[0]:.1f} s, median {known[len(known) // 2]:.1f} s, "
    text += f"max {known[-1]:.1f} s"
    return text + (f" ({unknown} with no progress after)" if unknown else "")


def format_figures(report: ChaosReport, config: ChaosConfig) -> str:
    f = report.figures
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(f.by_status.items()))
    kinds = Counter(fault.kind for fault in report.faults)
    rows = [
        ("sagas", f"{f.sagas}", f"at {config.rate:g}/s, faults {dict(kinds)}"),
        ("terminal", f"{f.terminal}", statuses),
        ("lost", f"{f.lost}", f"not terminal {config.settle:g} s after the last start"),
        ("inconsistent", f"{f.inconsistent}", "final status disagrees with the ledgers"),
        (
            "duplicate deliveries",
            f"{f.duplicate_deliveries}",
            f"{f.resent_copies} re-sent copies in the command topics, "
            f"{f.handler_reruns} handler re-runs past the dedupe store",
        ),
        ("duplicate effects", f"{f.duplicate_effects}", "an action or compensation applied twice"),
        (
            "extra attempts",
            f"{f.extra_attempts}",
            f"{f.extra_command_attempts} commands, {f.extra_compensation_attempts} compensations "
            "beyond what the payloads asked for",
        ),
        (
            "spurious rollbacks",
            f"{f.spurious_rollbacks}",
            "rolled back although the payload asked for no failure",
        ),
        ("missed rollbacks", f"{f.missed_rollbacks}", "completed although a failure was asked"),
        (
            "view/events disagree",
            f"{f.view_event_disagreements}",
            "final status not the one saga.events announced (or none was)",
        ),
        (
            "latency p50 / p99",
            f"{_seconds(f.latency_p50)} / {_seconds(f.latency_p99)}",
            "start sent -> terminal event",
        ),
        (
            "failover, kill -9 + restart",
            _failover_text(f.failovers.get("worker_restart", [])),
            "",
        ),
        ("failover, killed for good", _failover_text(f.failovers.get("worker_gone", [])), ""),
        ("stall, broker kill -9", _failover_text(f.failovers.get("broker", [])), ""),
    ]
    width = max(len(name) for name, _, _ in rows)
    text = "\n".join(
        f"  {name:<{width}}  {value:>8}  {note}".rstrip() for name, value, note in rows
    )
    if report.start_errors:
        errors = "; ".join(f"{n} x {e}" for e, n in report.start_errors.items())
        text += f"\n  start requests sent again after an error: {errors}"
    return text + "\n" + format_faults(report)


def format_faults(report: ChaosReport) -> str:
    """One line per fault: when (after the first start), what, how long until it was back."""
    lines = ["faults (seconds after the first start; failover: see check.failover_time):"]
    measured_as = {"worker_restart": "failover", "worker_gone": "failover", "broker": "stall"}
    for fault, measured in zip(report.faults, report.figures.fault_failovers, strict=True):
        parts = [
            f"  +{fault.at - report.load_started_at:6.1f}s {fault.kind:<14} {fault.target:<12}"
        ]
        if fault.kind.startswith("worker"):
            parts.append(f"partitions {fault.partitions}")
        if fault.ready_at is not None:
            starts = f", {fault.starts} starts" if fault.starts > 1 else ""
            parts.append(f"back after {fault.ready_at - fault.at:.1f} s{starts}")
        if fault.kind in measured_as:
            parts.append(f"{measured_as[fault.kind]} {_seconds(measured)}")
        if fault.failed_starts:
            parts.append(f"failed starts: {fault.failed_starts[0]!r}")
        if fault.error:
            parts.append(f"ERROR {fault.error}")
        lines.append("  ".join(parts))
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry points


async def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)  # pacing the load and the fault schedule


def _start_kafka(workdir: Path) -> local_kafka.LocalKafka:
    """A 3-node cluster on free ports (tried again on other ports if one is taken meanwhile)."""
    say("starting a 3-node Kafka cluster")
    for attempt in range(3):
        kafka = local_kafka.LocalKafka(
            local_kafka.free_port(3), 3, workdir / f"kafka-{attempt}", verbose=False
        )
        try:
            kafka.up()
            return kafka
        except local_kafka.KafkaToolError as e:
            kafka.down()
            say(f"Kafka did not start ({_last_line(str(e))}); trying other ports")
    raise RuntimeError("could not start a 3-node Kafka cluster in 3 attempts")


def run_chaos(config: ChaosConfig, kafka: local_kafka.LocalKafka | None = None) -> ChaosReport:
    """One chaos run; starts (and stops) its own 3-node Kafka unless `kafka` is given."""
    workdir = config.workdir or scratch_dir("chaos-")
    workdir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a broker down is the plan
    own_kafka = kafka is None
    if kafka is None:
        kafka = _start_kafka(workdir)
    chaos = ChaosRun(config, kafka, workdir)
    try:
        chaos.start()
        asyncio.run(chaos.run())
        report = chaos.check()
    finally:
        say("stopping")
        chaos.stop()
        if own_kafka:
            kafka.down()
    print(f"\nchaos run {chaos.run_id} (logs, ledgers, chaos-report.json in {workdir}):")
    print(format_figures(report, config))
    for rollback in report.rolled_back_spuriously():
        print(f"spurious rollback: {rollback}")
    if report.details:
        shown = min(config.show, len(report.details))
        print(f"\n{len(report.details)} lost or inconsistent sagas; the first {shown}:")
        print(report.problem_text(shown))
    return report
