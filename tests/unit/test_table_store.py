"""A table read goes to its store once."""

from __future__ import annotations

import weakref
from pathlib import Path
from types import SimpleNamespace

from faust.streams import _current_event

from saga_app.kafka_io import _Processing, make_faust_app
from saga_app.settings import Settings


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
