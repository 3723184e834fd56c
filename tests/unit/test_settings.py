"""Settings come from SAGA_* variables, converted by type, with errors that name the variable."""

from __future__ import annotations

import pytest

from saga_app.settings import Settings


def test_settings_parse_flags_and_numbers_and_reject_nonsense() -> None:
    """SAGA_* values are converted by type, and a bad one says which variable is wrong."""
    settings = Settings.from_env({"SAGA_WEB_TABLES": "on", "SAGA_PARTITIONS": "12"})
    assert (settings.web_tables, settings.partitions) == (True, 12)
    assert Settings.from_env({}).web_tables is False
    with pytest.raises(ValueError, match="SAGA_PARTITIONS"):
        Settings.from_env({"SAGA_PARTITIONS": "many"})
    with pytest.raises(ValueError, match="SAGA_WEB_TABLES"):
        Settings.from_env({"SAGA_WEB_TABLES": "maybe"})


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("604800", 604800.0), ("7d", 604800.0), ("12h", 43200.0), ("30m", 1800.0), ("45s", 45.0),
     ("1.5h", 5400.0), (" 2S ", 2.0), ("0", 0.0)],
)  # fmt: skip
def test_retention_takes_seconds_or_a_unit(raw: str, seconds: float) -> None:
    """SAGA_RETENTION is seconds, or a number with s, m, h or d; 0 keeps sagas forever."""
    assert Settings.from_env({"SAGA_RETENTION": raw}).retention == seconds


@pytest.mark.parametrize("raw", ["", "d", "7w", "-1", "-1d", "nan", "inf", "seven days"])
def test_a_retention_that_is_no_duration_is_refused_by_name(raw: str) -> None:
    """A wrong SAGA_RETENTION stops the worker with the variable and the accepted forms."""
    with pytest.raises(ValueError, match=r"SAGA_RETENTION must be seconds.*e\.g\. 7d"):
        Settings.from_env({"SAGA_RETENTION": raw})


def test_retention_defaults_to_a_week_and_is_never_negative() -> None:
    """Finished sagas are kept 7 days unless told otherwise; a negative override is refused."""
    assert Settings.from_env({}).retention == 7 * 86400
    with pytest.raises(ValueError, match="SAGA_RETENTION"):
        Settings(retention=-5)


@pytest.mark.parametrize(
    ("raw", "size"),
    [("268435456", 256 << 20), ("256MiB", 256 << 20), ("256m", 256 << 20), ("1g", 1 << 30),
     ("1GB", 1 << 30), ("512k", 512 << 10), (" 64 MiB ", 64 << 20), ("100b", 100), ("0", 0)],
)  # fmt: skip
def test_store_memory_takes_bytes_or_a_unit(raw: str, size: int) -> None:
    """SAGA_STORE_MEMORY is bytes, or a whole number with k, m or g (units of 1,024)."""
    assert Settings.from_env({"SAGA_STORE_MEMORY": raw}).store_memory == size


@pytest.mark.parametrize("raw", ["", "m", "1.5g", "-1", "-1m", "2t", "lots"])
def test_a_store_memory_that_is_no_size_is_refused_by_name(raw: str) -> None:
    """A wrong SAGA_STORE_MEMORY stops the process with the variable and the accepted forms."""
    with pytest.raises(ValueError, match=r"SAGA_STORE_MEMORY must be bytes.*e\.g\. 256MiB"):
        Settings.from_env({"SAGA_STORE_MEMORY": raw})


def test_store_memory_defaults_to_256_mib_and_is_never_negative() -> None:
    """Every process bounds its stores unless told otherwise (0: faust's own, unbounded)."""
    assert Settings.from_env({}).store_memory == 256 << 20
    with pytest.raises(ValueError, match="SAGA_STORE_MEMORY"):
        Settings(store_memory=-1)
