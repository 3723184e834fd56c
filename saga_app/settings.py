"""Worker settings, each overridable by a `SAGA_*` environment variable (DESIGN.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from topics.catalog import DEFAULT_PARTITIONS, TopicCatalog


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
    sweep_interval: float = 0.25
    """Seconds between two sweeps for overdue timers; the resolution of timeouts and backoffs."""
    log_level: str = "info"
    log_format: str = "auto"
    """`json`, `console`, or `auto` (console on a terminal, JSON otherwise)."""
    producer_linger_ms: int = 0
    """How long the producer waits to fill a batch. Keep 0: with faust-streaming 0.15.3 and
    aiokafka 0.14, table changelog records sent with a linger sat in the producer until more
    traffic came (seen 12 s and more), so the changelog lagged the local store."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Read `SAGA_<FIELD>` variables; keyword overrides win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"SAGA_{f.name.upper()}")
            if raw is not None:
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
