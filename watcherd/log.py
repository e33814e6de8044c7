"""Logging: JSON lines to a rotated file that watcherd owns, readable key=value on the console.

launchd never rotates its StandardOutPath/StandardErrorPath, so the daemon's real log is
this Python-managed file; the console stream stays small.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

import structlog

LOG_FILE = "watcherd.log"

_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=False),
]


def configure(
    level: str = "info",
    log_dir: Path | None = None,
    max_bytes: int = 5_000_000,
    backups: int = 3,
) -> Path | None:
    """Route structlog through stdlib logging; return the log file path, if any."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level.upper())

    console = logging.StreamHandler(sys.stderr)
    if not sys.stderr.isatty():  # launchd/systemd capture: keep it to warnings and errors
        console.setLevel(max(root.level, logging.WARNING))
    console.setFormatter(
        _formatter(
            structlog.processors.KeyValueRenderer(
                key_order=["timestamp", "level", "event"], drop_missing=True
            )
        )
    )
    root.addHandler(console)

    log_file = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_file = log_dir / LOG_FILE
        rotating = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        rotating.setFormatter(_formatter(structlog.processors.JSONRenderer(ensure_ascii=False)))
        root.addHandler(rotating)

    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return log_file


def _formatter(renderer) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )


def get(name: str = "watcherd") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
