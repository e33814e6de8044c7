"""The job queue: one SQLite file in WAL mode.

Queries are plain SQL through `sqlite3`; the schema's migrations use sqlite-utils, which
only the writers import (`status` opens the database read-only and must start fast).

One row per (file, content): the same bytes at the same path are transcribed once; a
changed file at the same path gets a new row. Jobs move through the states

    queued ──claim──▶ running ──▶ done
      ▲                  ├──▶ skipped (it has subtitles already: `skip_subtitled`)
      │                  ├──▶ queued (error, attempts left, after a backoff)
      │                  └──▶ failed (error, no attempts left)
      └── recover() at start, for rows a crash left running      any ──cancel──▶ cancelled

The worker takes the due queued job of highest priority, the oldest first among equals
(`CLAIM_ORDER`). Priorities are integers: `PRIORITIES` names the usual three, and `bump`
puts a job one above every other queued job.

A job that ends done or failed with a hook to run gets a row in `hooks`, in the same
transaction: pending ──▶ running ──▶ done | failed | timed_out. A row a crash left
running is run again at the next start (its attempts count up), so a hook runs at least
once per finished job, and never again once its end is recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from watcherd.locations import BUSY_TIMEOUT_SECONDS

if TYPE_CHECKING:
    import sqlite_utils

STATES = ("queued", "running", "done", "failed", "cancelled", "skipped")
HOOK_STATES = ("pending", "running", "done", "failed", "timed_out")
PRIORITIES = {"low": -1, "normal": 0, "high": 1}
# Which due job runs next: the highest priority, then the oldest (a retry waits its turn
# by `not_before`). `claim` and `next_job` share it, so `status` shows what claim takes.
# A job a crash interrupted waits behind the others of its priority: a file that kills the
# daemon cannot keep the rest of the queue from running.
CLAIM_ORDER = "priority DESC, interrupted, not_before, id"
# How far a running job got in this run (`jobs.stage`): a crash before the engine took it
# says nothing about the file, and one after the engine finished it says the file is fine.
CLAIMED, DECODING, DECODED = 0, 1, 2
RECENT_JOBS = 20  # the queue's ETA uses the speed of this many latest finished jobs


def path_key(path: Path | str) -> str:
    """The identity of a path. macOS file systems ignore case and Unicode normalisation
    by default, and FSEvents reports either form, so fold both there; elsewhere
    different bytes are different files."""
    folder, name = os.path.split(os.path.abspath(str(path)))
    text = os.path.join(os.path.realpath(folder), name)  # a linked folder is one place
    if sys.platform == "darwin":
        return unicodedata.normalize("NFC", text).casefold()
    return text


def content_hash(path: Path, chunk: int = 1 << 20) -> str:
    """The other half of a job's identity: the SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Job:
    id: int
    path: str
    state: str
    size: int
    sha256: str
    attempts: int
    created_at: float
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    audio_seconds: float | None = None
    processing_seconds: float | None = None
    progress: float = 0.0
    outputs: list[str] = field(default_factory=list)
    model: str | None = None
    language: str | None = None
    inbox: str | None = None
    priority: int = 0
    interrupted: int = 0  # times a crash interrupted it, progress or not
    stalls: int = 0  # crashes in a row that left its saved progress where it was
    # Its hook, if one was due (`jobs()` and `get()` read these from the hooks table).
    hook_state: str | None = None
    hook_attempts: int | None = None
    hook_error: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        names = cls.__dataclass_fields__
        values = {k: v for k, v in zip(row.keys(), row, strict=True) if k in names}
        values["outputs"] = json.loads(values.get("outputs") or "[]")
        return cls(**values)

    @property
    def speed(self) -> float | None:
        """× realtime: audio seconds per processing second."""
        if self.audio_seconds and self.processing_seconds:
            return self.audio_seconds / self.processing_seconds
        return None

    @property
    def waits(self) -> str | None:
        """Why a queued job waits behind the others, if it does (`CLAIM_ORDER`)."""
        if self.state != "queued" or not self.interrupted:
            return None
        times = f"{self.interrupted} time{'' if self.interrupted == 1 else 's'}"
        stalled = f", {self.stalls} in a row at the same point" if self.stalls else ""
        return f"behind the other files: the daemon died while transcribing it ({times}{stalled})"

    def remaining_seconds(self, speed: float | None, now: float) -> float | None:
        """How long this running job still needs: from its own pace once it has shown
        one (5% done), before that its length at the queue's recent speed, less the time
        it has run."""
        done = self.progress / 100
        elapsed = now - self.started_at if self.started_at else 0.0
        if done >= 0.05 and elapsed > 0:
            return elapsed * (1 - done) / done
        if self.audio_seconds and speed:
            return max(self.audio_seconds / speed - elapsed, 0.0)
        return None


@dataclass(frozen=True)
class Outlook:
    """What waits in the queue, and how fast the queue has been going."""

    waiting: int  # queued jobs
    waiting_audio_seconds: float  # the audio of those whose length is known
    unknown_length: int  # queued jobs whose length is not known (yet)
    speed: float | None  # × realtime, wall clock, over the latest finished jobs
    speed_jobs: int  # how many jobs that speed is from


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


# Append only: each step runs once, in order, and bumps PRAGMA user_version.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
]


@dataclass(frozen=True)
class DueHook:
    """A finished job's hook that has not run to its end yet."""

    job: Job
    event: str  # "done" or "failed": which command runs
    attempts: int  # started before (a crash interrupted them)
    input: str | None  # its stdin: the JSON transcript of a done job


class Store:
    """Thread-safe access to the jobs table through one connection."""

    def __init__(
        self,
        path: Path | str,
        *,
        readonly: bool = False,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
    ):
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

    # --- enqueue -------------------------------------------------------------------

    def is_known(self, path: Path | str, size: int, mtime_ns: int) -> bool:
        """True when this exact file (path, size, mtime) already has a job: no need to hash."""
        with self._lock:
            row = self.conn.execute(
                "SELECT 1 FROM jobs WHERE path_key = ? AND size = ? AND mtime_ns = ? LIMIT 1",
                [path_key(path), size, mtime_ns],
            ).fetchone()
        return row is not None

    def enqueue(
        self,
        path: Path | str,
        *,
        size: int,
        mtime_ns: int,
        sha256: str,
        inbox: str | None = None,
        priority: int = 0,
        audio_seconds: float | None = None,
    ) -> tuple[Job, bool]:
        """Queue a file once per content; returns (job, created). `audio_seconds` is the
        length its container declares, for the queue's ETA, until transcription measures it."""
        key = path_key(path)
        with self.transaction():
            rows = self.rows(
                """
                INSERT INTO jobs (path, path_key, inbox, size, mtime_ns, sha256, created_at,
                                  priority, audio_seconds)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (path_key, sha256) DO NOTHING
                RETURNING *
                """,
                [str(path), key, inbox, size, mtime_ns, sha256, time.time(), priority,
                 audio_seconds],
            )  # fmt: skip
            if rows:
                # New content at this path: older versions still waiting are superseded.
                self.conn.execute(
                    """
                    UPDATE jobs SET state = 'cancelled', finished_at = ?,
                        error = 'superseded by newer content at the same path'
                    WHERE path_key = ? AND state = 'queued' AND id != ?
                    """,
                    [time.time(), key, rows[0]["id"]],
                )
                return Job.from_row(rows[0]), True
            # Same content seen before: remember the new stat so scans skip hashing it.
            self.conn.execute(
                "UPDATE jobs SET size = ?, mtime_ns = ? WHERE path_key = ? AND sha256 = ?",
                [size, mtime_ns, key, sha256],
            )
            row = self._one("SELECT * FROM jobs WHERE path_key = ? AND sha256 = ?", [key, sha256])
            return row, False

    # --- the worker's side ---------------------------------------------------------

    def claim(self, pid: int | None = None) -> Job | None:
        """Atomically take the next due queued job (`CLAIM_ORDER`) and mark it running."""
        now = time.time()
        with self._lock:
            rows = self.rows(
                f"""
                UPDATE jobs
                SET state = 'running', attempts = attempts + 1, started_at = ?,
                    progress = 0, worker_pid = ?, stage = 0,
                    mark = COALESCE((SELECT MAX(until) FROM checkpoints
                                     WHERE checkpoints.job_id = jobs.id), 0)
                WHERE id = (
                    SELECT id FROM jobs WHERE state = 'queued' AND not_before <= ?
                    ORDER BY {CLAIM_ORDER} LIMIT 1
                )
                RETURNING *
                """,
                [now, pid or os.getpid(), now],
            )
        return Job.from_row(rows[0]) if rows else None

    def set_stage(self, job_id: int, stage: int) -> None:
        """Record that the engine took a running job (DECODING) or handed it back (DECODED)."""
        with self._lock:
            self.conn.execute(
                "UPDATE jobs SET stage = ? WHERE id = ? AND state = 'running'", [stage, job_id]
            )

    def set_progress(self, job_id: int, progress: float) -> bool:
        """Record progress (0-100); False when the job is no longer running (cancelled)."""
        with self._lock:
            cursor = self.conn.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND state = 'running'",
                [round(progress, 1), job_id],
            )
        return cursor.rowcount == 1

    def plan_outputs(self, job_id: int, outputs: list[str]) -> None:
        """Record the outputs a job is about to write, before it writes them: after a crash
        the retry knows they are its own to replace, and where its temp files are."""
        with self._lock:
            self.conn.execute(
                "UPDATE jobs SET outputs = ? WHERE id = ? AND state = 'running'",
                [json.dumps(outputs), job_id],
            )

    def finish(
        self,
        job_id: int,
        *,
        outputs: list[str],
        audio_seconds: float,
        processing_seconds: float,
        model: str,
        language: str,
        hook_input: str | None = None,
    ) -> bool:
        """Record a job done. With `hook_input` (its stdin) the job's hook is recorded as due
        in the same transaction, so a crash right after cannot lose it."""
        with self.transaction():
            cursor = self.conn.execute(
                """
                UPDATE jobs SET state = 'done', progress = 100, error = NULL, finished_at = ?,
                    outputs = ?, audio_seconds = ?, processing_seconds = ?, model = ?,
                    language = ?, stalls = 0
                WHERE id = ? AND state = 'running'
                """,
                [
                    time.time(),
                    json.dumps(outputs),
                    audio_seconds,
                    processing_seconds,
                    model,
                    language,
                    job_id,
                ],
            )
            done = cursor.rowcount == 1
            if done:  # what survived crashes has served its purpose
                self.conn.execute("DELETE FROM checkpoints WHERE job_id = ?", [job_id])
                if hook_input is not None:
                    self._hook_due(job_id, "done", hook_input)
        return done

    def fail(
        self, job_id: int, error: str, *, retry_after: float | None = None, hook: bool = False
    ) -> str:
        """Record an error; requeue after `retry_after` seconds, or end failed, with its
        hook (`hook`) recorded as due in the same transaction. Returns the new state."""
        state = "queued" if retry_after is not None else "failed"
        with self.transaction():
            cursor = self.conn.execute(
                """
                UPDATE jobs SET state = ?, error = ?, finished_at = ?, not_before = ?
                WHERE id = ? AND state = 'running'
                """,
                [
                    state,
                    error,
                    None if retry_after is not None else time.time(),
                    time.time() + (retry_after or 0),
                    job_id,
                ],
            )
            if hook and state == "failed" and cursor.rowcount == 1:
                self._hook_due(job_id, "failed", None)
        return state

    def skip(self, job_id: int, reason: str) -> bool:
        """End a job without transcribing it (it has subtitles already); False when it was
        cancelled meanwhile."""
        with self._lock:
            cursor = self.conn.execute(
                """
                UPDATE jobs SET state = 'skipped', error = ?, finished_at = ?, progress = 0
                WHERE id = ? AND state = 'running'
                """,
                [reason, time.time(), job_id],
            )
        return cursor.rowcount == 1

    # --- hooks -----------------------------------------------------------------------

    def _hook_due(self, job_id: int, event: str, hook_input: str | None) -> None:
        # A job transcribed again (`retry`) gets a fresh row: its hook runs again.
        self.conn.execute(
            "INSERT OR REPLACE INTO hooks (job_id, event, input, created_at) VALUES (?, ?, ?, ?)",
            [job_id, event, hook_input, time.time()],
        )

    def due_hooks(self) -> list[DueHook]:
        """Hooks not run to their end: just recorded, or interrupted by a crash."""
        rows = self.rows(
            """
            SELECT jobs.*, hooks.event AS hook_event, hooks.attempts AS hook_attempts,
                hooks.input AS hook_input
            FROM hooks JOIN jobs ON jobs.id = hooks.job_id
            WHERE hooks.state IN ('pending', 'running') ORDER BY hooks.job_id
            """
        )
        return [
            DueHook(Job.from_row(r), r["hook_event"], r["hook_attempts"], r["hook_input"])
            for r in rows
        ]

    def start_hook(self, job_id: int) -> int:
        """Record that the hook starts now; returns which attempt this is (1, 2...)."""
        with self._lock:
            (attempt,) = self.conn.execute(
                """
                UPDATE hooks SET state = 'running', attempts = attempts + 1, started_at = ?
                WHERE job_id = ? RETURNING attempts
                """,
                [time.time(), job_id],
            ).fetchone()
        return attempt

    def end_hook(
        self, job_id: int, state: str, *, exit_code: int | None = None, error: str | None = None
    ) -> None:
        """Record how the hook ended; it never runs again (its stdin is dropped)."""
        with self._lock:
            self.conn.execute(
                """
                UPDATE hooks SET state = ?, exit_code = ?, error = ?, finished_at = ?,
                    input = NULL
                WHERE job_id = ?
                """,
                [state, exit_code, error, time.time(), job_id],
            )

    def drop_hook(self, job_id: int) -> None:
        """Forget a due hook (its command was removed from the settings)."""
        with self._lock:
            self.conn.execute("DELETE FROM hooks WHERE job_id = ?", [job_id])

    def requeue(self, job_id: int) -> None:
        """Put an interrupted job back without counting the attempt (clean shutdown)."""
        with self._lock:
            self.conn.execute(
                """
                UPDATE jobs SET state = 'queued', progress = 0, started_at = NULL,
                    attempts = MAX(attempts - 1, 0)
                WHERE id = ? AND state = 'running'
                """,
                [job_id],
            )

    def recover(self, poison_after: int) -> tuple[int, int]:
        """At start: jobs a crash left running go back to the queue, behind the others.
        A crash is laid at a job's door only when the job ran alone (a job once
        interrupted is a suspect, and the worker runs suspects alone), the engine was
        working on it (not before it took the file, not after it handed it back), and
        its saved progress did not move: a stall. A run in which the engine finished the
        file, or its checkpoints moved, clears the stalls. After `poison_after` stalls in
        a row it fails: a file that kills the daemon must not loop forever, while one that
        was merely interrupted (a restart, memory pressure, a crash another file caused)
        goes on as long as it gets further. Returns (requeued, failed)."""
        progress = "COALESCE((SELECT MAX(until) FROM checkpoints WHERE job_id = jobs.id), 0)"
        with self.transaction():
            self.conn.execute(  # every right-hand side reads the row as it was
                f"""
                UPDATE jobs SET interrupted = interrupted + 1,
                    stalls = CASE WHEN {progress} > mark OR stage = {DECODED} THEN 0
                                  WHEN interrupted > 0 AND stage = {DECODING} THEN stalls + 1
                                  ELSE stalls END
                WHERE state = 'running'
                """
            )
            failed = self.conn.execute(
                """
                UPDATE jobs SET state = 'failed', finished_at = ?,
                    error = path || ': the daemon died ' || stalls || ' times in a row while '
                        || 'transcribing it alone, each time at the same point: given up as a '
                        || 'file that crashes it (`watcherd retry ' || id || '` tries again)'
                WHERE state = 'running' AND stalls >= ?
                """,
                [time.time(), poison_after],
            ).rowcount
            requeued = self.conn.execute(
                "UPDATE jobs SET state = 'queued', progress = 0 WHERE state = 'running'"
            ).rowcount
        return requeued, failed

    # --- work that survives a crash ------------------------------------------------

    def save_checkpoint(self, job_id: int, sha256: str, checkpoint: dict) -> None:
        """Record that a job is settled up to `checkpoint["until"]`, with the segments
        settled since its last checkpoint (`transcript.segments_to_json`)."""
        with self._lock:
            self.conn.execute(
                """
                INSERT INTO checkpoints
                    (job_id, sha256, until, segments, language, probability, saved_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (job_id, until) DO NOTHING
                """,
                [job_id, sha256, checkpoint["until"], checkpoint["segments"],
                 checkpoint.get("language"), checkpoint.get("probability"), time.time()],
            )  # fmt: skip

    def checkpoints(self, job_id: int, sha256: str) -> list[sqlite3.Row]:
        """A job's checkpoints for this content, in order; those of other content (the
        file changed under the job) are dropped."""
        with self.transaction():
            self.conn.execute(
                "DELETE FROM checkpoints WHERE job_id = ? AND sha256 != ?", [job_id, sha256]
            )
            return self.conn.execute(
                "SELECT * FROM checkpoints WHERE job_id = ? ORDER BY until", [job_id]
            ).fetchall()

    def clear_checkpoints(self, job_id: int) -> None:
        with self._lock:
            self.conn.execute("DELETE FROM checkpoints WHERE job_id = ?", [job_id])

    def paused(self) -> bool:
        with self._lock:
            row = self.conn.execute("SELECT value FROM daemon WHERE key = 'paused'").fetchone()
        return bool(row) and row[0] == "true"

    def set_paused(self, paused: bool) -> None:
        """Pause or resume the queue: kept in the database, so a restart keeps it."""
        with self._lock:
            self.conn.execute(
                "INSERT INTO daemon (key, value) VALUES ('paused', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                ["true" if paused else "false"],
            )

    # --- the user's side -------------------------------------------------------------

    def retry(self, job_id: int) -> Job:
        with self._lock:
            self.conn.execute(
                """
                UPDATE jobs SET state = 'queued', error = NULL, attempts = 0, progress = 0,
                    not_before = 0, finished_at = NULL, interrupted = 0, stalls = 0
                WHERE id = ? AND state IN ('failed', 'cancelled', 'done', 'skipped')
                """,
                [job_id],
            )
            return self.get(job_id)

    def set_priority(self, job_id: int, priority: int) -> Job:
        """Change a job's priority; it counts while the job is (or is again) queued."""
        with self._lock:
            self.conn.execute("UPDATE jobs SET priority = ? WHERE id = ?", [priority, job_id])
            return self.get(job_id)

    def bump(self, job_id: int) -> Job:
        """Put a queued job ahead of every other queued job, in one statement: its priority
        becomes one above the highest of the others (at least `high`, and never lower than
        it was). A job that is not queued is left as it is (KeyError when there is none)."""
        with self._lock:
            self.conn.execute(
                """
                UPDATE jobs SET priority = MAX(?1, priority, 1 + (
                    SELECT COALESCE(MAX(priority), 0) FROM jobs
                    WHERE state = 'queued' AND id != ?2
                ))
                WHERE id = ?2 AND state = 'queued'
                """,
                [PRIORITIES["high"], job_id],
            )
            return self.get(job_id)

    def cancel(self, job_id: int) -> Job:
        with self._lock:
            self.conn.execute(
                """
                UPDATE jobs SET state = 'cancelled', finished_at = ?
                WHERE id = ? AND state IN ('queued', 'running')
                """,
                [time.time(), job_id],
            )
            return self.get(job_id)

    # --- queries ---------------------------------------------------------------------

    def _one(self, sql: str, params: list) -> Job:
        rows = self.rows(sql, params)
        if not rows:
            raise KeyError(params[0])
        return Job.from_row(rows[0])

    def _select_jobs(self) -> str:
        """Jobs with their hook's state. A database a daemon of the previous version still
        runs on (`status` reads it as it is) has no hooks table yet."""
        hooks = self.rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'hooks'")
        if not hooks:
            return "SELECT * FROM jobs"
        return """
            SELECT jobs.*, hooks.state AS hook_state, hooks.attempts AS hook_attempts,
                hooks.error AS hook_error
            FROM jobs LEFT JOIN hooks ON hooks.job_id = jobs.id"""

    def get(self, job_id: int) -> Job:
        with self._lock:
            return self._one(f"{self._select_jobs()} WHERE jobs.id = ?", [job_id])

    def jobs(self, limit: int | None = None, state: str | None = None) -> list[Job]:
        sql = self._select_jobs()
        params: list = []
        if state:
            sql += " WHERE jobs.state = ?"
            params.append(state)
        sql += " ORDER BY jobs.id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            return [Job.from_row(r) for r in self.rows(sql, params)]

    def next_job(self) -> Job | None:
        """The job `claim` would take now."""
        rows = self.rows(
            f"SELECT * FROM jobs WHERE state = 'queued' AND not_before <= ? "
            f"ORDER BY {CLAIM_ORDER} LIMIT 1",
            [time.time()],
        )
        return Job.from_row(rows[0]) if rows else None

    def outlook(self, recent: int = RECENT_JOBS) -> Outlook:
        """The queued audio and the recent speed, for `status`'s ETA. The speed is wall
        clock, claim to finish (loading, writing and each file's fixed costs included):
        what the queue really takes."""
        waiting, audio, unknown = self.rows(
            """
            SELECT COUNT(*), COALESCE(SUM(audio_seconds), 0),
                   COUNT(*) - COUNT(audio_seconds)
            FROM jobs WHERE state = 'queued'
            """
        )[0]
        jobs, done_audio, took = self.rows(
            """
            SELECT COUNT(*), SUM(audio_seconds), SUM(finished_at - started_at) FROM (
                SELECT audio_seconds, started_at, finished_at FROM jobs
                WHERE state = 'done' AND audio_seconds > 0 AND finished_at > started_at
                ORDER BY finished_at DESC LIMIT ?
            )
            """,
            [recent],
        )[0]
        speed = done_audio / took if jobs and took else None
        return Outlook(waiting, audio, unknown, speed, jobs)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self.conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | dict(rows)

    def output_owner(self, output: Path | str) -> str | None:
        """The source path of the job that wrote this output file, if any."""
        with self._lock:
            row = self.conn.execute(
                """
                SELECT jobs.path_key FROM jobs, json_each(jobs.outputs)
                WHERE json_each.value = ? ORDER BY jobs.id DESC LIMIT 1
                """,
                [str(output)],
            ).fetchone()
        return row[0] if row else None
