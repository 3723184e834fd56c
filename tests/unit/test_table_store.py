"""The saga tables' RocksDB stores write no log of their own: the changelog is the log."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from saga_app.kafka_io import make_faust_app
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
