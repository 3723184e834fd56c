"""A takeover builds its indexes with the garbage collector paused, and turns it back on."""

from __future__ import annotations

import gc

import pytest

from saga_app.app import garbage_collection_paused


def test_the_collector_is_paused_while_the_indexes_are_built_and_resumed_after() -> None:
    assert gc.isenabled()
    with garbage_collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_the_collector_is_resumed_when_the_takeover_fails() -> None:
    """A takeover that fails (a broker down) is tried again; the collector must not stay off."""
    with pytest.raises(RuntimeError), garbage_collection_paused():
        raise RuntimeError("offsets unavailable")
    assert gc.isenabled()
