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
