"""The tables' RocksDB stores: no log of their own (the changelog is the log), one read a get."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from faust.streams import _current_event

from saga_app.kafka_io import _Processing, make_faust_app
from saga_app.settings import Settings


def _store(tmp_path: Path) -> Any:
    app = make_faust_app(Settings(data_dir=tmp_path), "store-test")
    return app.Table("sagas", key_type=bytes, value_type=bytes, partitions=1).data


def _log_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.log"))


def test_a_partition_store_writes_no_log_and_keeps_what_it_had_once_let_go(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    for i in range(200):
        store._db_for_partition(0).put(f"saga-{i}".encode(), b"x" * 2000)
    path = store.partition_path(0)
    assert _log_bytes(Path(path)) == 0  # 400 KB of states, none of it logged
    store._dbs.clear()  # what faust's store does on stop and on revoke: no close(), a drop
    gc.collect()
    reopened = store.rocksdb_options.open(path)
    assert reopened.get(b"saga-199") == b"x" * 2000
    reopened.close()


def test_a_table_read_returns_the_stored_value_or_the_default(tmp_path: Path) -> None:
    app = make_faust_app(Settings(data_dir=tmp_path), "store-test")
    table = app.Table("answered", key_type=bytes, value_type=bytes, partitions=1)
    processing = _Processing(SimpleNamespace(partition=0))  # as while a record is handled
    token = _current_event.set(weakref.ref(processing))  # type: ignore[arg-type]
    try:
        table.data._db_for_partition(0).put(b"m-1", b"reply")
        assert table.get(b"m-1") == b"reply"
        assert table.get(b"m-2") is None
        assert table.get(b"m-2", b"none") == b"none"
    finally:
        _current_event.reset(token)
