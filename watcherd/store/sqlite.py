"""The job queue in one SQLite file in WAL mode: the embedded default, for one machine.

Queries are plain SQL through `sqlite3` (`base.Store` holds the SQL both backends share);
the schema's migrations use sqlite-utils, which only the writers import (`status` opens the
database read-only and must start fast).

One daemon has the file to itself (the instance lock beside it), so a job's place is the
file's path on this machine (`path_key`): one row per (path, content), the same bytes at
the same path are transcribed once, and a changed file at the same path gets a new row.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from watcherd.locations import BUSY_TIMEOUT_SECONDS
from watcherd.store.base import Store, path_key

if TYPE_CHECKING:
    import sqlite_utils


def _migration_1(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            path TEXT NOT NULL,
            path_key TEXT NOT NULL,
            inbox TEXT,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            not_before REAL NOT NULL DEFAULT 0,
            audio_seconds REAL,
            processing_seconds REAL,
            progress REAL NOT NULL DEFAULT 0,
            outputs TEXT NOT NULL DEFAULT '[]',
            model TEXT,
            language TEXT,
            worker_pid INTEGER,
            UNIQUE (path_key, sha256)
        )
        """
    )
    db.execute("CREATE INDEX jobs_claim ON jobs (state, not_before, id)")
    db.execute("CREATE INDEX jobs_stat ON jobs (path_key, size, mtime_ns)")


def _migration_2(db: sqlite_utils.Database) -> None:
    """Priorities, and the claim's index in the claim's order."""
    db["jobs"].add_column("priority", int, not_null_default=0)
    db.execute("DROP INDEX jobs_claim")
    db.execute("CREATE INDEX jobs_claim ON jobs (state, priority DESC, not_before, id)")


def _allow_state(db: sqlite_utils.Database, state: str) -> None:
    """Widen the jobs table's CHECK on `state`. SQLite cannot alter a constraint, so the
    table is rebuilt as sqlite-utils' `transform` rebuilds one (new table, copy, drop,
    rename; its indexes, UNIQUE constraint and AUTOINCREMENT sequence kept), with the
    wider CHECK in the new table's definition. `transform` itself takes no CHECK to change."""
    jobs = db["jobs"]
    (check,) = [c for c in jobs.checks if c.column == "state"]
    wider = "state IN ({})".format(", ".join(f"'{s}'" for s in [*check.options, state]))
    statements = jobs.transform_sql()
    if statements[0].count(check.check) != 1:
        raise RuntimeError(f"cannot find the state CHECK in {statements[0]!r}")
    statements[0] = statements[0].replace(check.check, wider)
    for sql in statements:  # foreign keys are off meanwhile: see `Store.migrate`
        db.execute(sql)


def _migration_3(db: sqlite_utils.Database) -> None:
    """Skipped jobs, and the hook run after each finished job."""
    _allow_state(db, "skipped")
    db.execute(
        """
        CREATE TABLE hooks (
            job_id INTEGER PRIMARY KEY REFERENCES jobs (id),
            event TEXT NOT NULL CHECK (event IN ('done', 'failed')),
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'done', 'failed', 'timed_out')),
            attempts INTEGER NOT NULL DEFAULT 0,
            input TEXT,
            exit_code INTEGER,
            error TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL
        )
        """
    )
    db.execute("CREATE INDEX hooks_due ON hooks (state)")


def _migration_4(db: sqlite_utils.Database) -> None:
    """Work that survives a crash: each job's checkpoints (how far it is settled, and the
    segments settled so far), how often a crash interrupted it and how often without
    progress, and the daemon's own state (paused or not)."""
    jobs = db["jobs"]
    jobs.add_column("interrupted", int, not_null_default=0)
    jobs.add_column("stalls", int, not_null_default=0)
    jobs.add_column("mark", int, not_null_default=0)  # its checkpoint when it started
    jobs.add_column("stage", int, not_null_default=0)  # STAGES: how far this run took it
    db.execute("DROP INDEX jobs_claim")
    db.execute(
        "CREATE INDEX jobs_claim ON jobs (state, priority DESC, interrupted, not_before, id)"
    )
    db.execute(
        """
        CREATE TABLE checkpoints (
            job_id INTEGER NOT NULL REFERENCES jobs (id),
            sha256 TEXT NOT NULL,
            until INTEGER NOT NULL,
            segments TEXT NOT NULL,
            language TEXT,
            probability REAL,
            saved_at REAL NOT NULL,
            PRIMARY KEY (job_id, until)
        )
        """
    )
    db.execute("CREATE TABLE daemon (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


def _migration_5(db: sqlite_utils.Database) -> None:
    """Leases and the fleet: which worker holds a running job and when it last said it
    was alive, and each worker's own report (`Store.heartbeat`)."""
    jobs = db["jobs"]
    jobs.add_column("worker", str)
    jobs.add_column("heartbeat_at", float)
    db.execute(
        """
        CREATE TABLE workers (
            name TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            model TEXT,
            job_id INTEGER,
            speed REAL,
            started_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL
        )
        """
    )


# Append only: each step runs once, in order, and bumps PRAGMA user_version.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
]


class SQLiteStore(Store):
    """The queue in a SQLite file, through one connection shared by the daemon's threads."""

    errors = (sqlite3.Error,)
    migrations = MIGRATIONS

    def __init__(
        self,
        path: Path | str,
        *,
        readonly: bool = False,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
        **identity,
    ):
        super().__init__(**identity)
        self.path = Path(path)
        target, uri = (f"file:{self.path}?mode=ro", True) if readonly else (str(self.path), False)
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each statement commits on its own; transactions are explicit.
        self.conn = sqlite3.connect(target, uri=uri, timeout=busy_timeout,
                                    check_same_thread=False, isolation_level=None)  # fmt: skip
        self.conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        if not readonly:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")  # a hook belongs to a job
            self.migrate()

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def execute(self, sql: str, params: list | tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.conn.execute(sql, params)

    def rows(self, sql: str, params: list | tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    def run(self, sql: str, params: list | tuple = ()) -> int:
        with self._lock:
            return self.conn.execute(sql, params).rowcount

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One writer at a time from the start (IMMEDIATE): a deferred transaction that
        reads and then writes can fail to upgrade its lock when another writer came first."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    # --- schema ------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return self.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> None:
        """Bring the schema up to date. Kept here rather than in `sqlite_utils.Migrations`,
        which reads what is pending before its (deferred) transaction: two processes
        starting together could both apply a step. Here the version is read and bumped
        inside one IMMEDIATE transaction; the steps themselves use sqlite-utils."""
        import sqlite_utils

        db = sqlite_utils.Database(self.conn)
        # A step may rebuild a table others reference (SQLite's way to change a CHECK):
        # foreign keys are off while the steps run, checked before they commit, and on
        # again after, as SQLite's own procedure for such changes says. The pragma cannot
        # change inside a transaction, so this comes first.
        enforced = self.execute("PRAGMA foreign_keys").fetchone()[0]
        self.execute("PRAGMA foreign_keys = OFF")
        try:
            with self.transaction():
                version = self.schema_version
                if version > len(MIGRATIONS):
                    raise RuntimeError(
                        f"{self.path}: schema version {version} is newer than this watcherd "
                        f"knows ({len(MIGRATIONS)}); upgrade watcherd"
                    )
                for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
                    step(db)
                    self.conn.execute(f"PRAGMA user_version = {number}")
                if enforced and self.execute("PRAGMA foreign_key_check").fetchall():
                    raise RuntimeError(f"{self.path}: a migration broke a foreign key")
        finally:
            self.execute(f"PRAGMA foreign_keys = {'ON' if enforced else 'OFF'}")

    # --- the dialect -----------------------------------------------------------------

    def _place(self, path: Path | str) -> tuple[str, list]:
        return "path_key = ?", [path_key(path)]

    def _place_columns(self, path: Path | str) -> dict:
        return {"path_key": path_key(path)}

    def _identity(self) -> tuple[str, ...]:
        return ("path_key", "sha256")

    def _greatest(self, *terms: str) -> str:
        return f"MAX({', '.join(terms)})"

    def _outputs_contain(self) -> str:
        return "EXISTS (SELECT 1 FROM json_each(jobs.outputs) WHERE json_each.value = ?)"

    def _select_jobs(self) -> str:
        """A database a daemon of the previous version still runs on (`status` reads it
        as it is) may have no hooks table yet."""
        hooks = self.rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'hooks'")
        return super()._select_jobs() if hooks else "SELECT * FROM jobs"
