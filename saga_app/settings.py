"""Worker settings, each overridable by a `SAGA_*` environment variable (DESIGN.md)."""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path

from topics.catalog import DEFAULT_PARTITIONS, TopicCatalog

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_SIZES = {"k": 2**10, "m": 2**20, "g": 2**30}


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to know about its surroundings."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, comma-separated."""
    partitions: int = DEFAULT_PARTITIONS
    """Partitions of every saga topic and the saga table: the ceiling on the number of workers."""
    topic_prefix: str = ""
    """Prefix of topic names and consumer groups, so several deployments can share a broker."""
    web_host: str = "127.0.0.1"
    """Host this worker's web server binds and advertises; other workers route requests to it."""
    web_port: int = 6066
    """Port of this worker's web server; each worker on a host needs its own."""
    web_tables: bool = False
    """Serve Faust's raw `/table/...` pages too: they show stored bytes, not the typed views."""
    web_token: str = field(default="", repr=False)
    """When set, starting, aborting and re-driving sagas over HTTP needs `Authorization: Bearer`
    with it (it opens the reads too). Empty: anyone who reaches the port may change sagas."""
    web_read_token: str = field(default="", repr=False)
    """When set, the reads (sagas, stats, definitions, metrics) need it or `web_token` as a
    bearer token. `/health` and the dashboard page stay open either way (saga_app/web_auth.py)."""
    data_dir: str = "data"
    """Where this worker keeps its RocksDB table stores; each worker needs its own."""
    store: str = "rocksdb://"
    """Table store: `rocksdb://` keeps state across restarts, `memory://` replays the changelog."""
    store_memory: int = field(default=256 * 2**20, metadata={"size": True})
    """Bytes a process's RocksDB stores may hold in memory together, memtables and block cache,
    across all its tables and partitions; from the environment also as `512MiB` or `1g`. 0:
    faust's own, which give every partition of every table up to 192 MiB of memtables and a
    2 GiB cache: a worker that took over 1,000,000 sagas held 2.6 GiB, 1.5 GiB with 256 MiB."""
    retention: float = field(default=7 * 86400.0, metadata={"duration": True})
    """Seconds a finished saga (completed, compensated or failed) stays in the saga table after
    its last transition; then the orchestrator deletes it (its events stay on `saga.events`).
    0 keeps sagas forever. From the environment also as `7d`, `12h`, `30m` or `45s`."""
    max_running: int = 500
    """Sagas running at once across the cluster (0: no limit). Starts beyond it are stored
    queued and run, oldest first, as running ones finish: a burst waits instead of overloading
    the participants into timeouts (saga_app/admission.py). The same value on every worker.
    500 leaves slow participants twice the room they need: held to a twentieth of a core, they
    answered 2,000 sagas at once with no step timed out at 1,000 and 519 at 2,000 (README,
    "Bursts")."""
    queue_wait: float = field(default=60.0, metadata={"duration": True})
    """Longest a queued saga waits for room before it runs anyway."""
    sweep_interval: float = 0.25
    """Seconds between two sweeps for overdue timers; the resolution of timeouts and backoffs."""
    log_level: str = "info"
    log_format: str = "auto"
    """`json`, `console`, or `auto` (console on a terminal, JSON otherwise)."""
    sagas: str = ""
    """Modules whose top-level `SagaDefinition`s a worker runs, comma-separated (`--sagas`);
    empty: the example sagas."""
    simulate: bool = False
    """Honour the `simulate` hooks of a command's payload in participants (demos and tests)."""
    producer_linger_ms: int = 0
    """How long the producer waits to fill a batch. 0 is best measured: aiokafka keeps one produce
    request in flight per broker, so batches already fill under load, and a linger only delays
    each hop (`make bench-e2e`, 5 ms: no more sagas/s, p50 at 10 sagas/s 29 -> 106 ms). The
    changelog records that once sat in the producer with a linger went through faust's
    `ProducerBuffer`; staged ones (`saga_app.staged`) do not."""
    producer_batch_bytes: int = 1_000_000
    """Largest batch of records the producer sends to one partition at once; at most the
    brokers' `message.max.bytes` (default 1 MiB). aiokafka sends one request per broker at a
    time, and a full batch waits for the one before it: at Kafka's 16 KiB, a round's states
    (2 KB each, over 8 partitions) took a round trip per 64 of them, before any command left."""
    round_records: int = 200
    """Most records a process takes from one fetch into a round, which it then flushes: stores
    their states, then sends their messages (`saga_app.staged`); 0: all the fetch brought.
    Unbounded, a burst moved as one wave: rounds of ~1,000 records (`SAGA_MAX_RUNNING=1000`)
    kept the participants idle while the worker handled one, and the worker idle while they
    answered it (385 sagas/s; 610-670 with rounds of 200, `make bench-e2e`)."""
    worker_id: str = ""
    """This process's static group membership id (with its role in front); unique per process
    and stable across its restarts. Default `<hostname>-<web_port>`."""
    replication_factor: int = 0
    """Replicas of every saga topic and changelog; 0 (default) means 3 when the cluster has at
    least 3 brokers, else 1. Topics get `min.insync.replicas` = this - 1 (at least 1)."""
    security_protocol: str = "PLAINTEXT"
    """How clients talk to the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: str = "PLAIN"
    """With a SASL protocol: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    """Kept out of `repr`, so it never reaches a log line or a traceback."""
    ssl_cafile: str = ""
    """PEM file of the CA(s) that signed the brokers' certificates; default: the system's CAs."""
    ssl_certfile: str = ""
    """PEM client certificate, for brokers that authenticate clients by certificate (mTLS)."""
    ssl_keyfile: str = ""
    """PEM private key of `ssl_certfile`, unless that file holds it too."""

    def __post_init__(self) -> None:
        if not self.worker_id:
            object.__setattr__(self, "worker_id", f"{socket.gethostname()}-{self.web_port}")
        object.__setattr__(self, "security_protocol", self.security_protocol.upper())
        object.__setattr__(self, "sasl_mechanism", self.sasl_mechanism.upper())
        if self.retention < 0:
            raise ValueError(
                f"SAGA_RETENTION must be 0 (keep forever) or more, got {self.retention}"
            )
        if self.store_memory < 0:
            raise ValueError(
                f"SAGA_STORE_MEMORY must be 0 (faust's own) or more, got {self.store_memory}"
            )
        if self.replication_factor < 0:
            raise ValueError(
                f"SAGA_REPLICATION_FACTOR must be 0 (automatic) or more, "
                f"got {self.replication_factor}"
            )
        _check_connection(self)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Read `SAGA_<FIELD>` variables; keyword overrides win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"SAGA_{f.name.upper()}")
            if raw is None:
                continue
            if f.metadata.get("duration"):
                values[f.name] = parse_duration(raw, f"SAGA_{f.name.upper()}")
            elif f.metadata.get("size"):
                values[f.name] = parse_size(raw, f"SAGA_{f.name.upper()}")
            else:
                values[f.name] = _convert(f.name, raw, f.type)
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def catalog(self) -> TopicCatalog:
        return TopicCatalog(prefix=self.topic_prefix, partitions=self.partitions)

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"

    @property
    def worker_data_dir(self) -> Path:
        """Data dir per web port, so two workers started from one folder never share a store."""
        path = Path(self.data_dir) / f"worker-{self.web_port}"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _check_connection(s: Settings) -> None:
    """Refuse connection settings that cannot work, saying which variable to set."""
    protocol, mechanism = s.security_protocol, s.sasl_mechanism
    if protocol not in SECURITY_PROTOCOLS:
        raise ValueError(
            f"SAGA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}, "
            f"got {protocol!r}"
        )
    if mechanism not in SASL_MECHANISMS:
        raise ValueError(
            f"SAGA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}, got {mechanism!r}"
        )
    if protocol.startswith("SASL_"):
        missing = [
            f"SAGA_SASL_{name.upper()}"
            for name, value in (("username", s.sasl_username), ("password", s.sasl_password))
            if not value
        ]
        if missing:
            raise ValueError(f"SAGA_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}")
    elif s.sasl_username or s.sasl_password:
        raise ValueError(
            "SAGA_SASL_USERNAME/SAGA_SASL_PASSWORD are set but SAGA_SECURITY_PROTOCOL is "
            f"{protocol}: set it to SASL_SSL (or SASL_PLAINTEXT) to log in"
        )
    files = {"CAFILE": s.ssl_cafile, "CERTFILE": s.ssl_certfile, "KEYFILE": s.ssl_keyfile}
    given = {name: path for name, path in files.items() if path}
    if given and not protocol.endswith("SSL"):
        raise ValueError(
            f"SAGA_SSL_{next(iter(given))} is set but SAGA_SECURITY_PROTOCOL is {protocol}: "
            "set it to SSL or SASL_SSL to use TLS"
        )
    for name, path in given.items():
        if not Path(path).is_file():
            raise ValueError(f"SAGA_SSL_{name}={path} is not a readable file")
    if s.ssl_keyfile and not s.ssl_certfile:
        raise ValueError("SAGA_SSL_KEYFILE is set without SAGA_SSL_CERTFILE: set both")


def parse_duration(raw: str, variable: str) -> float:
    """Seconds from `45`, `1.5`, `45s`, `30m`, `12h` or `7d`; a ValueError names `variable`."""
    text = raw.strip().lower()
    scale = _UNITS.get(text[-1:])
    try:
        seconds = float(text[:-1] if scale else text) * (scale or 1.0)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < math.inf:  # refuses nan too
        raise ValueError(
            f"{variable} must be seconds or a number with a unit s, m, h or d (e.g. 7d, 12h, "
            f"90), got {raw!r}"
        )
    return seconds


def parse_size(raw: str, variable: str) -> int:
    """Bytes from `268435456`, `256k`, `256MiB`, `1g` or `1GB` (units of 1,024); a ValueError
    names `variable`."""
    text = raw.strip().lower().removesuffix("b").removesuffix("i")
    scale = _SIZES.get(text[-1:])
    try:
        size = int(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        size = -1
    if size < 0:
        raise ValueError(
            f"{variable} must be bytes or a whole number with a unit k, m or g (e.g. 256MiB, "
            f"1g), got {raw!r}"
        )
    return size


def format_duration(seconds: float) -> str:
    """`seconds` in the largest unit that divides it: 604800 -> `7d`, 90 -> `90s`."""
    for unit, size in _UNITS.items():
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _convert(name: str, raw: str, kind: object) -> object:
    if kind in (bool, "bool"):
        if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(f"SAGA_{name.upper()} must be true or false, got {raw!r}")
        return raw.lower() in ("1", "true", "yes", "on")
    if kind in (int, "int"):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"SAGA_{name.upper()} must be an integer, got {raw!r}") from None
    if kind in (float, "float"):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"SAGA_{name.upper()} must be a number, got {raw!r}") from None
    return raw
