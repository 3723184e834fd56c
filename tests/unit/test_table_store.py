"""The tables' stores: a read goes to the store once; which stores keep RocksDB's log."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from saga_app.kafka_io import SagaRepository, _Processing, derived_state_table, make_faust_app
from saga_app.settings import Settings
from topics import TopicCatalog


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


def _answered(tmp_path: Path, ttl: int | None) -> Any:
    """The participants' `answered` store, its entries kept `ttl` seconds (None: faust's
    plain database)."""
    return _answered_in(make_faust_app(Settings(data_dir=tmp_path), "store-test"), ttl)


def _answered_in(app: Any, ttl: int | None) -> Any:
    options = {} if ttl is None else {"ttl": ttl}
    return app.Table("answered", key_type=bytes, value_type=bytes, partitions=1, options=options)


def _let_go(store: Any) -> None:
    store._dbs.clear()  # as faust's store on stop and on revoke
    gc.collect()


def test_an_expiring_table_drops_an_entry_after_its_ttl_at_a_compaction(tmp_path: Path) -> None:
    """`answered` forgets a reply once kept `ttl` seconds: RocksDB drops it when it compacts, and
    keeps what is younger. (RocksDB's clock, so this polls for a few seconds.)"""
    db = _answered(tmp_path, ttl=1).data._db_for_partition(0)
    db.put(b"old", b"reply")
    db.compact_range(None, None)
    assert db.get(b"old") == b"reply"  # younger than its ttl: kept, value read whole
    deadline = time.monotonic() + 15
    while db.get(b"old") is not None and time.monotonic() < deadline:
        time.sleep(0.2)
        db.put(b"new", b"reply")
        db.compact_range(None, None)
    assert db.get(b"old") is None
    assert db.get(b"new") == b"reply"


def test_a_store_written_before_entries_expired_is_rebuilt_not_misread(tmp_path: Path) -> None:
    """RocksDB stores an expiring value with a timestamp and misreads a database of the other
    kind, so a store written without a ttl is set aside; recovery refills it from the
    changelog. Once expiring, reopening keeps it."""
    plain = _answered(tmp_path, ttl=None).data
    plain._db_for_partition(0).put(b"m-1", b"reply-1")
    _let_go(plain)
    expiring = _answered(tmp_path, ttl=3600).data
    assert expiring._db_for_partition(0).get(b"m-1") is None  # not misread as "rep"
    expiring._db_for_partition(0).put(b"m-2", b"reply-2")
    _let_go(expiring)
    assert _answered(tmp_path, ttl=3600).data._db_for_partition(0).get(b"m-2") == b"reply-2"


def test_rocksdb_info_logs_are_rolled_and_few(tmp_path: Path) -> None:
    """RocksDB's `LOG` file grows by every flush and compaction; each store rolls it at 1 MiB
    and keeps one old file, as the options RocksDB records for the database say."""
    for memory in (0, 16 << 20):
        settings = Settings(data_dir=tmp_path / str(memory), store_memory=memory)
        table = _answered_in(make_faust_app(settings, "store-test"), ttl=None)
        path = Path(table.data.partition_path(0))
        table.data._db_for_partition(0).put(b"m-1", b"reply")
        [recorded] = path.glob("OPTIONS-*")
        options = recorded.read_text()
        assert f"max_log_file_size={1 << 20}" in options
        assert "keep_log_file_num=2" in options


def _states_on(partitions: range) -> dict[int, bytes]:
    """A saga id of each partition, found by Kafka's partitioner (`TopicCatalog`)."""
    catalog = TopicCatalog(partitions=len(partitions))
    ids: dict[int, bytes] = {}
    n = 0
    while len(ids) < len(partitions):
        ids.setdefault(catalog.partition_of(f"saga-{n}"), f"saga-{n}".encode())
        n += 1
    return ids


def test_a_takeover_reads_the_sagas_of_its_own_partitions_only(tmp_path: Path) -> None:
    """RocksDB keeps a database per partition, read straight: the owned ones only, and not the
    offset faust stores beside the states."""
    catalog = TopicCatalog(partitions=4)
    app = make_faust_app(Settings(data_dir=tmp_path, partitions=4), "store-test")
    table = derived_state_table(app, "sagas", partitions=4)
    for partition, saga_id in _states_on(range(4)).items():
        table.data._db_for_partition(partition).put(saga_id, b"state of " + saga_id)
        table.data.set_persisted_offset(TP(table.changelog_topic.get_topic_name(), partition), 9)
    stored = SagaRepository(table).stored({1, 3}, catalog.partition_of)
    ids = _states_on(range(4))
    assert sorted(stored) == sorted([b"state of " + ids[1], b"state of " + ids[3]])


def test_a_takeover_from_the_memory_store_reads_its_own_partitions_only(tmp_path: Path) -> None:
    """The memory store keeps every partition in one dict: a saga's id says which it is on."""
    catalog = TopicCatalog(partitions=4)
    settings = Settings(data_dir=tmp_path, partitions=4, store="memory://")
    table = derived_state_table(make_faust_app(settings, "store-test"), "sagas", partitions=4)
    ids = _states_on(range(4))
    for saga_id in ids.values():
        table.data.data[saga_id] = b"state of " + saga_id
    stored = SagaRepository(table).stored({0, 2}, catalog.partition_of)
    assert sorted(stored) == sorted([b"state of " + ids[0], b"state of " + ids[2]])


def _write_megabytes(table: Any, megabytes: int) -> None:
    for partition in range(4):
        db = table.data._db_for_partition(partition)
        for i in range(megabytes * 256 // 4):
            db.put(f"saga-{partition}-{i}".encode(), b"x" * 4096)


def _tables_writing_megabytes(settings: Settings, megabytes: int) -> list[Any]:
    app = make_faust_app(settings, "store-test")
    tables = [
        derived_state_table(app, "sagas", partitions=4),
        app.Table("answered", key_type=bytes, value_type=bytes, partitions=4),
    ]
    for table in tables:
        _write_megabytes(table, megabytes)
    return tables


def _flushed_files(tables: list[Any]) -> int:
    """The tables' SST files: what RocksDB flushed out of memory to disk."""
    paths = [Path(t.data.partition_path(p)) for t in tables for p in range(4)]
    return sum(len(list(path.glob("*.sst"))) for path in paths)


def test_the_stores_of_a_process_share_the_memory_it_is_given(tmp_path: Path) -> None:
    """`SAGA_STORE_MEMORY`: every table's databases, one per partition, charge their memtables
    to one cache of that size, and writes past it flush them to disk. With 0 each keeps
    faust's own 64 MiB memtables, and the same 8 MiB per database stay in memory."""
    limit = 16 << 20
    bounded = _tables_writing_megabytes(
        Settings(data_dir=tmp_path / "b", partitions=4, store_memory=limit), 32
    )
    memory = bounded[0].app.store_memory
    assert memory is not None and memory.cache.get_usage() > 0  # memtables charged to it
    deadline = time.monotonic() + 15  # RocksDB flushes in the background
    while not _flushed_files(bounded) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _flushed_files(bounded) > 0

    unbounded = _tables_writing_megabytes(
        Settings(data_dir=tmp_path / "u", partitions=4, store_memory=0), 32
    )
    assert unbounded[0].app.store_memory is None
    assert unbounded[0].data.rocksdb_options.memory is None
    assert _flushed_files(unbounded) == 0
