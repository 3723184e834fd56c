"""One structlog configuration: JSON lines off a terminal, readable console output on one."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

LIBRARIES = ("faust", "mode", "aiokafka", "kafka", "aiohttp")
"""Loggers kept at warning unless the level is debug: their info lines drown the sagas'."""
KEPT_AT_INFO = ("faust.tables.recovery",)
"""Except these: a few lines per rebalance that say where each table's recovery starts and ends,
which is what to read when a worker's state looks wrong after a takeover."""


def _renderer(fmt: str) -> structlog.typing.Processor:
    if fmt not in ("auto", "console", "json"):
        raise ValueError(f"unknown log format {fmt!r}: use auto, console or json")
    if fmt == "console" or (fmt == "auto" and sys.stderr.isatty()):
        return structlog.dev.ConsoleRenderer()
    return structlog.processors.JSONRenderer()


def _level(level: str) -> int:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning or error")
    return numeric


def stdlib_logging_config(level: str = "info", fmt: str = "auto") -> dict[str, Any]:
    """A `logging.config.dictConfig` that renders Faust's and the libraries' lines like ours."""
    numeric = _level(level)
    formatter = {
        "()": structlog.stdlib.ProcessorFormatter,
        "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(fmt)],
        "foreign_pre_chain": [
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
    }
    library_level = logging.getLevelName(max(numeric, logging.WARNING))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"saga": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "saga",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": logging.getLevelName(numeric), "handlers": ["stderr"]},
        "loggers": {
            **{name: {"level": library_level} for name in LIBRARIES},
            **{name: {"level": logging.getLevelName(numeric)} for name in KEPT_AT_INFO},
        },
    }


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog from the `SAGA_LOG_LEVEL` and `SAGA_LOG_FORMAT` settings."""
    numeric = _level(level)
    renderer = _renderer(fmt)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
