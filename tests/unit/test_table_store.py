"""The tables' stores: a read goes to the store once; which stores keep RocksDB's log."""

from __future__ import annotations

import gc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from saga_app.kafka_io import _Processing, derived_state_table, make_faust_app
from saga_app.settings import Settings


def test_a_table_read_returns_the_stored_value_or_the_default(tmp_path: Path) -> None:
    app = make_faust_app(Settings(data_dir=tmp_path), "store-test")
    table = app.Table("answered", key_type=bytes, value_type=bytes, partitions=1)
    with _Processing(SimpleNamespace(partition=0)):  # as while a record is handled
        table.data._db_for_partition(0).put(b"m-1", b"reply")
        assert table.get(b"m-1") == b"reply"
        assert table.get(b"m-2") is None
        assert table.get(b"m-2", b"none") == b"none"


def _log_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.log"))


def _fill(store: Any) -> Path:
    for i in range(200):
        store._db_for_partition(0).put(f"saga-{i}".encode(), b"x" * 2000)
    return Path(store.partition_path(0))


def test_the_saga_table_writes_no_log_and_keeps_what_it_had_once_let_go(tmp_path: Path) -> None:
    """The orchestrator's store is a copy of its changelog: RocksDB keeps no write-ahead log of
    it, and what was written is there again once faust has let the store go."""
    app = make_faust_app(Settings(data_dir=tmp_path), "store-test")
    store = derived_state_table(app, "sagas", partitions=1).data
    path = _fill(store)
    assert _log_bytes(path) == 0  # 400 KB of states, none of it logged
    store._dbs.clear()  # what faust's store does on stop and on revoke: no close(), a drop
    gc.collect()
    reopened = store.rocksdb_options.open(str(path))
    assert reopened.get(b"saga-199") == b"x" * 2000
    reopened.close()


def test_a_participant_table_keeps_its_log(tmp_path: Path) -> None:
    """A participant's records and answers are logged as they are written: a participant killed
    after a handler acted finds its answer on restart instead of acting again."""
    app = make_faust_app(Settings(data_dir=tmp_path), "store-test")
    store = app.Table("answered", key_type=bytes, value_type=bytes, partitions=1).data
    assert _log_bytes(_fill(store)) > 400_000
