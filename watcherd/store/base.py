"""The store's contract: what a job queue does, whichever database holds it.

Jobs move through the states

    queued ──claim──▶ running ──▶ done
      ▲                  ├──▶ skipped (it has subtitles already: `skip_subtitled`)
      │                  ├──▶ queued (error, attempts left, after a backoff)
      │                  └──▶ failed (error, no attempts left)
      └── recover(): a crash left it running, or its worker's lease expired
                                                               any ──cancel──▶ cancelled

The worker takes the due queued job of highest priority, the oldest first among equals
(`CLAIM_ORDER`). Priorities are integers: `PRIORITIES` names the usual three, and `bump`
puts a job one above every other queued job.

A claimed job carries a lease: the claiming worker's name and a heartbeat the worker
renews (`heartbeat`). Every write that ends or advances a running job names the worker
(`OURS`), so a worker whose lease was taken from it can no longer touch the job.

A job that ends done or failed with a hook to run gets a row in `hooks`, in the same
transaction: pending ──▶ running ──▶ done | failed | timed_out. A row a crash left
running is run again at the next start (its attempts count up), so a hook runs at least
once per finished job, and never again once its end is recorded.

The SQL here is the SQL both backends run (written with `?` placeholders); each backend
says only what its dialect does differently: how a job's place is named (`_place`), how
the claim locks, scalar MAX, and JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
import unicodedata
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watcherd.locations import default_worker_name

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
# A running job this worker holds: every write that advances or ends one says so.
OURS = "id = ? AND state = 'running' AND worker = ?"
# How far a job's saved progress reaches (its last checkpoint): the claim marks it, and
# recovery compares with the mark to tell a crash that moved it on from one that did not.
SETTLED = "COALESCE((SELECT MAX(until) FROM checkpoints WHERE checkpoints.job_id = jobs.id), 0)"


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
    path: str  # where this machine reaches the file
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
    worker: str | None = None  # the lease: who holds it (or last held it)
    worker_pid: int | None = None
    heartbeat_at: float | None = None  # when its worker last renewed the lease
    # Its hook, if one was due (`jobs()` and `get()` read these from the hooks table).
    hook_state: str | None = None
    hook_attempts: int | None = None
    hook_error: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        names = cls.__dataclass_fields__
        values = {k: row[k] for k in row.keys() if k in names}  # noqa: SIM118 (sqlite3.Row)
        outputs = values.get("outputs") or "[]"
        values["outputs"] = json.loads(outputs) if isinstance(outputs, str) else list(outputs)
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


@dataclass(frozen=True)
class DueHook:
    """A finished job's hook that has not run to its end yet."""

    job: Job
    event: str  # "done" or "failed": which command runs
    attempts: int  # started before (a crash interrupted them)
    input: str | None  # its stdin: the JSON transcript of a done job


@dataclass(frozen=True)
class WorkerInfo:
    """A daemon working on the queue, as it last reported itself (`heartbeat`)."""

    name: str
    host: str
    pid: int
    model: str | None
    job_id: int | None  # the job it is transcribing, if any
    speed: float | None  # × realtime of its latest finished job
    started_at: float
    heartbeat_at: float

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> WorkerInfo:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


class Store:
    """The job queue. Thread-safe: the daemon's watcher, worker, hooks and heartbeat share
    one store. `open_store` picks the backend from the `database` setting."""

    # Whether several daemons share the database (PostgreSQL), or one daemon has it to
    # itself (SQLite, held by the instance lock): then a job running at start is ours.
    shared: bool = False
    # What the backend's driver raises when the database fails (locked, down, full).
    errors: tuple[type[Exception], ...] = ()
    # The backend's schema steps, in order; `schema_version` counts those applied.
    migrations: list = []
    # How the claim's inner SELECT locks the row it picks ("" where one writer at a time).
    claim_lock = ""

    def __init__(self, *, worker: str | None = None, inboxes: Mapping[str, Path] | None = None):
        self.worker = worker or default_worker_name()
        self.inboxes = dict(inboxes or {})  # inbox name -> where this machine mounts it

    # --- what each backend provides -------------------------------------------------

    def close(self) -> None:
        raise NotImplementedError

    def rows(self, sql: str, params: list | tuple = ()) -> list:
        """Rows of one statement, each readable by column name."""
        raise NotImplementedError

    def run(self, sql: str, params: list | tuple = ()) -> int:
        """Run one statement; returns how many rows it changed."""
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[None]:
        """Statements that commit together, or not at all."""
        raise NotImplementedError

    @property
    def schema_version(self) -> int:
        raise NotImplementedError

    def _place(self, path: Path | str) -> tuple[str, list]:
        """The condition naming the place a file is in (its identity, less its content)
        and the values for it."""
        raise NotImplementedError

    def _place_columns(self, path: Path | str) -> dict[str, Any]:
        """The columns a new job's place is stored in."""
        raise NotImplementedError

    def _greatest(self, *terms: str) -> str:
        """The largest of several SQL expressions (SQLite's scalar MAX, SQL's GREATEST)."""
        raise NotImplementedError

    def _outputs_contain(self) -> str:
        """A condition on `jobs` with one placeholder: its outputs list that path."""
        raise NotImplementedError

    def _job(self, row) -> Job:
        return Job.from_row(row)

    def claimable(self) -> tuple[str, list]:
        """A condition (with its values) on the jobs this worker can reach: all of them,
        unless the queue is shared by machines that mount different inboxes."""
        return "", []

    def _stored_path(self, path: str) -> str:
        """How a path this machine sees is written in the database (`_local_path` reads
        it back)."""
        return path

    # --- enqueue -------------------------------------------------------------------

    def is_known(self, path: Path | str, size: int, mtime_ns: int) -> bool:
        """True when this exact file (path, size, mtime) already has a job: no need to hash."""
        place, values = self._place(path)
        return bool(
            self.rows(
                f"SELECT 1 AS known FROM jobs WHERE {place} AND size = ? AND mtime_ns = ? LIMIT 1",
                [*values, size, mtime_ns],
            )
        )

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
        length its container declares, for the queue's ETA, until transcription measures it.
        Where several machines enqueue the same file at once, the unique constraint on
        (place, content) lets one of them create it; the others find it."""
        place, values = self._place(path)
        columns = self._place_columns(path) | {
            "path": str(path), "inbox": inbox, "size": size, "mtime_ns": mtime_ns,
            "sha256": sha256, "created_at": time.time(), "priority": priority,
            "audio_seconds": audio_seconds,
        }  # fmt: skip
        unique = ", ".join(c for c in self._identity() if c != "sha256")
        with self.transaction():
            rows = self.rows(
                f"""
                INSERT INTO jobs ({", ".join(columns)})
                VALUES ({", ".join("?" for _ in columns)})
                ON CONFLICT ({unique}, sha256) DO NOTHING
                RETURNING *
                """,
                list(columns.values()),
            )
            if rows:
                # New content at this place: older versions still waiting are superseded.
                self.run(
                    f"""
                    UPDATE jobs SET state = 'cancelled', finished_at = ?,
                        error = 'superseded by newer content at the same path'
                    WHERE {place} AND state = 'queued' AND id != ?
                    """,
                    [time.time(), *values, rows[0]["id"]],
                )
                return self._job(rows[0]), True
            # Same content seen before: remember the new stat so scans skip hashing it.
            self.run(
                f"UPDATE jobs SET size = ?, mtime_ns = ? WHERE {place} AND sha256 = ?",
                [size, mtime_ns, *values, sha256],
            )
            job = self._one(f"SELECT * FROM jobs WHERE {place} AND sha256 = ?", [*values, sha256])
            return job, False

    def _identity(self) -> tuple[str, ...]:
        """The columns of the unique constraint that identifies a job."""
        raise NotImplementedError

    # --- the worker's side ---------------------------------------------------------

    def claim(self, pid: int | None = None) -> Job | None:
        """Atomically take the next due queued job (`CLAIM_ORDER`), mark it running and
        hold its lease."""
        now = time.time()
        reachable, values = self.claimable()
        rows = self.rows(
            f"""
            UPDATE jobs
            SET state = 'running', attempts = attempts + 1, started_at = ?,
                progress = 0, worker = ?, worker_pid = ?, heartbeat_at = ?, stage = 0,
                mark = {SETTLED}
            WHERE id = (
                SELECT id FROM jobs WHERE state = 'queued' AND not_before <= ?{reachable}
                ORDER BY {CLAIM_ORDER} LIMIT 1 {self.claim_lock}
            )
            RETURNING *
            """,
            [now, self.worker, pid or os.getpid(), now, now, *values],
        )
        return self._job(rows[0]) if rows else None

    def set_stage(self, job_id: int, stage: int) -> None:
        """Record that the engine took a running job (DECODING) or handed it back (DECODED)."""
        self.run(f"UPDATE jobs SET stage = ? WHERE {OURS}", [stage, job_id, self.worker])

    def set_progress(self, job_id: int, progress: float) -> bool:
        """Record progress (0-100); False when the job is no longer this worker's to run
        (cancelled, or its lease expired and it went back to the queue)."""
        return (
            self.run(
                f"UPDATE jobs SET progress = ? WHERE {OURS}",
                [round(progress, 1), job_id, self.worker],
            )
            == 1
        )

    def plan_outputs(self, job_id: int, outputs: list[str]) -> bool:
        """Record the outputs a job is about to write, before it writes them: after a crash
        the retry knows they are its own to replace, and where its temp files are. False
        when the job is no longer this worker's: then it must not write them."""
        stored = json.dumps([self._stored_path(p) for p in outputs])
        sql = f"UPDATE jobs SET outputs = ? WHERE {OURS}"
        return self.run(sql, [stored, job_id, self.worker]) == 1

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
        """Record a job done, with its outputs. With `hook_input` (its stdin) the job's hook
        is recorded as due in the same transaction, so a crash right after cannot lose it."""
        with self.transaction():
            done = self.run(
                f"""
                UPDATE jobs SET state = 'done', progress = 100, error = NULL, finished_at = ?,
                    outputs = ?, audio_seconds = ?, processing_seconds = ?, model = ?,
                    language = ?, stalls = 0
                WHERE {OURS}
                """,
                [time.time(), json.dumps([self._stored_path(p) for p in outputs]),
                 audio_seconds, processing_seconds, model, language, job_id, self.worker],
            )  # fmt: skip
            if done:  # what survived crashes has served its purpose
                self.run("DELETE FROM checkpoints WHERE job_id = ?", [job_id])
                if hook_input is not None:
                    self._hook_due(job_id, "done", hook_input)
        return bool(done)

    def fail(
        self, job_id: int, error: str, *, retry_after: float | None = None, hook: bool = False
    ) -> str:
        """Record an error; requeue after `retry_after` seconds, or end failed, with its
        hook (`hook`) recorded as due in the same transaction. Returns the new state."""
        state = "queued" if retry_after is not None else "failed"
        with self.transaction():
            changed = self.run(
                f"""
                UPDATE jobs SET state = ?, error = ?, finished_at = ?, not_before = ?
                WHERE {OURS}
                """,
                [state, error, None if retry_after is not None else time.time(),
                 time.time() + (retry_after or 0), job_id, self.worker],
            )  # fmt: skip
            if hook and state == "failed" and changed == 1:
                self._hook_due(job_id, "failed", None)
        return state

    def skip(self, job_id: int, reason: str) -> bool:
        """End a job without transcribing it (it has subtitles already); False when it was
        cancelled meanwhile."""
        return (
            self.run(
                f"""
                UPDATE jobs SET state = 'skipped', error = ?, finished_at = ?, progress = 0
                WHERE {OURS}
                """,
                [reason, time.time(), job_id, self.worker],
            )
            == 1
        )

    def requeue(self, job_id: int) -> None:
        """Put an interrupted job back without counting the attempt (clean shutdown)."""
        self.run(
            f"""
            UPDATE jobs SET state = 'queued', progress = 0, started_at = NULL,
                attempts = {self._greatest("attempts - 1", "0")}
            WHERE {OURS}
            """,
            [job_id, self.worker],
        )

    def recover(
        self, poison_after: int, lease_seconds: float | None = None, *, mine: bool = True
    ) -> tuple[int, int]:
        """Jobs whose worker died go back to the queue, behind the others. Without
        `lease_seconds`, every running job (one daemon per database, at its start: any job
        left running was its own). With it, those whose lease expired that long ago, and
        (`mine`) those this worker held in an earlier run.

        A crash is laid at a job's door only when the job ran alone (a job once
        interrupted is a suspect, and the worker runs suspects alone), the engine was
        working on it (not before it took the file, not after it handed it back), and
        its saved progress did not move: a stall. A run in which the engine finished the
        file, or its checkpoints moved, clears the stalls. After `poison_after` stalls in
        a row it fails: a file that kills its worker must not loop forever, whichever
        machine it kills, while one that was merely interrupted (a restart, memory
        pressure, a crash another file caused) goes on as long as it gets further.
        Returns (requeued, failed)."""
        lost, values = "state = 'running'", []
        if lease_seconds is not None:
            lost += " AND (heartbeat_at < ?" + (" OR worker = ?)" if mine else ")")
            values = [time.time() - lease_seconds, *([self.worker] if mine else [])]
        progress = SETTLED
        with self.transaction():
            self.run(  # every right-hand side reads the row as it was
                f"""
                UPDATE jobs SET interrupted = interrupted + 1,
                    stalls = CASE WHEN {progress} > mark OR stage = {DECODED} THEN 0
                                  WHEN interrupted > 0 AND stage = {DECODING} THEN stalls + 1
                                  ELSE stalls END
                WHERE {lost}
                """,
                values,
            )
            failed = self.run(
                f"""
                UPDATE jobs SET state = 'failed', finished_at = ?,
                    error = path || ': the daemon died ' || stalls || ' times in a row while '
                        || 'transcribing it alone, each time at the same point: given up as a '
                        || 'file that crashes it (`watcherd retry ' || id || '` tries again)'
                WHERE {lost} AND stalls >= ?
                """,
                [time.time(), *values, poison_after],
            )
            requeued = self.run(
                f"UPDATE jobs SET state = 'queued', progress = 0 WHERE {lost}", values
            )
        return requeued, failed

    # --- leases and the fleet --------------------------------------------------------

    def heartbeat(
        self,
        *,
        pid: int,
        model: str | None,
        job_id: int | None,
        speed: float | None,
        started_at: float,
    ) -> None:
        """This worker is alive: renew the lease of every job it runs, and say what it does
        (`workers`)."""
        now = time.time()
        with self.transaction():
            self.run(
                "UPDATE jobs SET heartbeat_at = ? WHERE state = 'running' AND worker = ?",
                [now, self.worker],
            )
            self.run(
                """
                INSERT INTO workers (name, host, pid, model, job_id, speed, started_at,
                                     heartbeat_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                    model = excluded.model, job_id = excluded.job_id, speed = excluded.speed,
                    started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at
                """,
                [self.worker, socket.gethostname(), pid, model, job_id, speed, started_at, now],
            )

    def leave(self) -> None:
        """This worker stops (a clean stop): it is no longer listed."""
        self.run("DELETE FROM workers WHERE name = ?", [self.worker])

    def workers(self) -> list[WorkerInfo]:
        """Every worker that has reported itself, by name."""
        return [WorkerInfo.from_row(r) for r in self.rows("SELECT * FROM workers ORDER BY name")]

    # --- hooks -----------------------------------------------------------------------

    def _hook_due(self, job_id: int, event: str, hook_input: str | None) -> None:
        # A job transcribed again (`retry`) gets a fresh row: its hook runs again.
        self.run(
            """
            INSERT INTO hooks (job_id, event, input, created_at) VALUES (?, ?, ?, ?)
            ON CONFLICT (job_id) DO UPDATE SET event = excluded.event, state = 'pending',
                attempts = 0, input = excluded.input, exit_code = NULL, error = NULL,
                created_at = excluded.created_at, started_at = NULL, finished_at = NULL
            """,
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
            DueHook(self._job(r), r["hook_event"], r["hook_attempts"], r["hook_input"])
            for r in rows
        ]

    def start_hook(self, job_id: int) -> int:
        """Record that the hook starts now; returns which attempt this is (1, 2...)."""
        (row,) = self.rows(
            """
            UPDATE hooks SET state = 'running', attempts = attempts + 1, started_at = ?
            WHERE job_id = ? RETURNING attempts
            """,
            [time.time(), job_id],
        )
        return row["attempts"]

    def end_hook(
        self, job_id: int, state: str, *, exit_code: int | None = None, error: str | None = None
    ) -> None:
        """Record how the hook ended; it never runs again (its stdin is dropped)."""
        self.run(
            """
            UPDATE hooks SET state = ?, exit_code = ?, error = ?, finished_at = ?, input = NULL
            WHERE job_id = ?
            """,
            [state, exit_code, error, time.time(), job_id],
        )

    def drop_hook(self, job_id: int) -> None:
        """Forget a due hook (its command was removed from the settings)."""
        self.run("DELETE FROM hooks WHERE job_id = ?", [job_id])

    # --- work that survives a crash ------------------------------------------------

    def save_checkpoint(self, job_id: int, sha256: str, checkpoint: dict) -> None:
        """Record that a job is settled up to `checkpoint["until"]`, with the segments
        settled since its last checkpoint (`transcript.segments_to_json`). It lives in the
        queue's database: whichever machine runs the job next resumes from it."""
        self.run(
            """
            INSERT INTO checkpoints
                (job_id, sha256, until, segments, language, probability, saved_at)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (job_id, until) DO NOTHING
            """,
            [job_id, sha256, checkpoint["until"], checkpoint["segments"],
             checkpoint.get("language"), checkpoint.get("probability"), time.time()],
        )  # fmt: skip

    def checkpoints(self, job_id: int, sha256: str) -> list:
        """A job's checkpoints for this content, in order; those of other content (the
        file changed under the job) are dropped."""
        with self.transaction():
            self.run("DELETE FROM checkpoints WHERE job_id = ? AND sha256 != ?", [job_id, sha256])
            return self.rows("SELECT * FROM checkpoints WHERE job_id = ? ORDER BY until", [job_id])

    def clear_checkpoints(self, job_id: int) -> None:
        self.run("DELETE FROM checkpoints WHERE job_id = ?", [job_id])

    def paused(self) -> bool:
        rows = self.rows("SELECT value FROM daemon WHERE key = 'paused'")
        return bool(rows) and rows[0]["value"] == "true"

    def set_paused(self, paused: bool) -> None:
        """Pause or resume the queue: kept in the database, so a restart keeps it (and
        every machine sharing the queue pauses)."""
        self.run(
            "INSERT INTO daemon (key, value) VALUES ('paused', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            ["true" if paused else "false"],
        )

    # --- the user's side -------------------------------------------------------------

    def retry(self, job_id: int) -> Job:
        self.run(
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
        self.run("UPDATE jobs SET priority = ? WHERE id = ?", [priority, job_id])
        return self.get(job_id)

    def bump(self, job_id: int) -> Job:
        """Put a queued job ahead of every other queued job, in one statement: its priority
        becomes one above the highest of the others (at least `high`, and never lower than
        it was). A job that is not queued is left as it is (KeyError when there is none)."""
        others = (
            "1 + (SELECT COALESCE(MAX(priority), 0) FROM jobs WHERE state = 'queued' AND id != ?)"  # noqa: E501
        )
        self.run(
            f"UPDATE jobs SET priority = {self._greatest('?', 'priority', others)} "
            "WHERE id = ? AND state = 'queued'",
            [PRIORITIES["high"], job_id, job_id],
        )
        return self.get(job_id)

    def cancel(self, job_id: int) -> Job:
        self.run(
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
        return self._job(rows[0])

    def _select_jobs(self) -> str:
        """Jobs with their hook's state."""
        return """
            SELECT jobs.*, hooks.state AS hook_state, hooks.attempts AS hook_attempts,
                hooks.error AS hook_error
            FROM jobs LEFT JOIN hooks ON hooks.job_id = jobs.id"""

    def get(self, job_id: int) -> Job:
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
        return [self._job(r) for r in self.rows(sql, params)]

    def next_job(self) -> Job | None:
        """The job `claim` would take now."""
        rows = self.rows(
            f"SELECT * FROM jobs WHERE state = 'queued' AND not_before <= ? "
            f"ORDER BY {CLAIM_ORDER} LIMIT 1",
            [time.time()],
        )
        return self._job(rows[0]) if rows else None

    def outlook(self, recent: int = RECENT_JOBS) -> Outlook:
        """The queued audio and the recent speed, for `status`'s ETA. The speed is wall
        clock, claim to finish (loading, writing and each file's fixed costs included):
        what the queue really takes. With several workers it is each job's own pace, not
        the fleet's."""
        (waiting,) = self.rows(
            """
            SELECT COUNT(*) AS jobs, COALESCE(SUM(audio_seconds), 0) AS audio,
                   COUNT(*) - COUNT(audio_seconds) AS unknown
            FROM jobs WHERE state = 'queued'
            """
        )
        (done,) = self.rows(
            """
            SELECT COUNT(*) AS jobs, SUM(audio_seconds) AS audio,
                   SUM(finished_at - started_at) AS took FROM (
                SELECT audio_seconds, started_at, finished_at FROM jobs
                WHERE state = 'done' AND audio_seconds > 0 AND finished_at > started_at
                ORDER BY finished_at DESC LIMIT ?
            ) AS recent
            """,
            [recent],
        )
        speed = done["audio"] / done["took"] if done["jobs"] and done["took"] else None
        return Outlook(
            waiting["jobs"], float(waiting["audio"]), waiting["unknown"], speed, done["jobs"]
        )

    def counts(self) -> dict[str, int]:
        rows = self.rows("SELECT state, COUNT(*) AS jobs FROM jobs GROUP BY state")
        return {state: 0 for state in STATES} | {r["state"]: r["jobs"] for r in rows}

    def output_owner(self, output: Path | str) -> str | None:
        """The place (`path_key`, as this machine sees it) of the job that wrote this
        output file, if any."""
        rows = self.rows(
            f"SELECT * FROM jobs WHERE {self._outputs_contain()} ORDER BY id DESC LIMIT 1",
            [self._stored_path(str(output))],
        )
        return path_key(self._job(rows[0]).path) if rows else None
