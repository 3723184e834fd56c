"""A table read goes to its store once."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from saga_app.kafka_io import _Processing, make_faust_app
from saga_app.settings import Settings


def test_a_table_read_returns_the_stored_value_or_the_default(tmp_path: Path) -> None:
    app = make_faust_app(Settings(data_dir=tmp_path), "store-test")
    table = app.Table("answered", key_type=bytes, value_type=bytes, partitions=1)
    with _Processing(SimpleNamespace(partition=0)):  # as while a record is handled
        table.data._db_for_partition(0).put(b"m-1", b"reply")
        assert table.get(b"m-1") == b"reply"
        assert table.get(b"m-2") is None
        assert table.get(b"m-2", b"none") == b"none"
