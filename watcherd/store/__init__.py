"""The job queue. One contract (`base.Store`), two backends chosen by the `database`
setting: a path is a SQLite file (`sqlite.py`, the embedded default for one machine), a
`postgresql://` URL is a PostgreSQL server several machines share (`postgres.py`).

    store = open_store(settings)          # the daemon's, with its worker name and inboxes
    store = open_store("/path/jobs.db")   # or a database alone

psycopg is imported only when a URL asks for it: `status` on SQLite stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from watcherd.locations import BUSY_TIMEOUT_SECONDS, ConfigError, is_postgres
from watcherd.store.base import (
    CLAIM_ORDER,
    CLAIMED,
    DECODED,
    DECODING,
    HOOK_STATES,
    PRIORITIES,
    RECENT_JOBS,
    STATES,
    DueHook,
    Job,
    Outlook,
    Store,
    WorkerInfo,
    content_hash,
    default_worker_name,
    path_key,
)
from watcherd.store.sqlite import MIGRATIONS, SQLiteStore

if TYPE_CHECKING:
    from watcherd.config import Settings

__all__ = [
    "CLAIM_ORDER", "CLAIMED", "DECODED", "DECODING", "HOOK_STATES", "MIGRATIONS", "PRIORITIES",
    "RECENT_JOBS", "STATES", "DueHook", "Job", "Outlook", "SQLiteStore", "Store", "WorkerInfo",
    "content_hash", "default_worker_name", "open_store", "path_key",
]  # fmt: skip

POSTGRES_EXTRA = "watcherd[postgres]"


def open_store(
    source: Settings | Path | str,
    *,
    readonly: bool = False,
    busy_timeout: float | None = None,
    worker: str | None = None,
    inboxes: Mapping[str, Path] | None = None,
) -> Store:
    """The store `source` names: the daemon's settings (its database, worker name and
    inboxes), or a database alone (a path or a postgresql:// URL) with the worker's name
    and its inboxes by name."""
    if hasattr(source, "database"):  # Settings
        settings = source
        source = settings.database
        busy_timeout = busy_timeout or settings.busy_timeout_seconds
        worker = worker or settings.worker
        inboxes = {inbox.name: inbox.path for inbox in settings.inboxes}
    timeout = busy_timeout or BUSY_TIMEOUT_SECONDS
    if is_postgres(source):
        try:
            from watcherd.store.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError(
                f"database = {str(source)!r} needs PostgreSQL support, which is not installed "
                f"({exc.msg}): pip install '{POSTGRES_EXTRA}'"
            ) from None
        return PostgresStore(str(source), readonly=readonly, connect_timeout=timeout,
                             worker=worker, inboxes=inboxes)  # fmt: skip
    return SQLiteStore(source, readonly=readonly, busy_timeout=timeout, worker=worker,
                       inboxes=inboxes)  # fmt: skip
