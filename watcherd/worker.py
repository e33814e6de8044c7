"""The one sequential worker: claim a job, transcribe it, write outputs, record the outcome.

It runs on its own thread inside the daemon and keeps the engine (and so the model)
loaded between jobs. Errors end in the job's row, never in the worker: bad input fails
that job with a message naming the file and the cause, and the next job runs.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from watcherd import faults, log, outputs
from watcherd.config import Profile, Settings
from watcherd.diarize.background import Speakers
from watcherd.engine import AudioError, Engine, ModelError
from watcherd.idle import IdleUnloader
from watcherd.profiles import decode_options, engine_for, layout
from watcherd.store import Job, Store, path_key
from watcherd.transcript import Transcript

PROGRESS_INTERVAL_SECONDS = 1.0
IDLE_POLL_SECONDS = 2.0  # jobs may also arrive from other processes (`watcherd add`)
DB_RETRY_SECONDS = 0.5
DB_RETRY_MAX_SECONDS = 30.0

T = TypeVar("T")


class JobStopped(Exception):
    """The job must stop now: cancelled by the user, or the daemon is shutting down."""


class Worker:
    def __init__(
        self, settings: Settings, store: Store, engine: Engine, idle: IdleUnloader | None = None
    ):
        self.settings = settings
        self.store = store
        self.engines = {engine.model_name: engine}  # one per model an inbox asks for
        self.idle = idle or IdleUnloader(settings.idle_unload_seconds, store)
        self.log = log.get()
        self.current: Job | None = None
        self.speakers = Speakers(settings.model_cache_dir)  # loads when a file needs it
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="watcherd-worker", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the worker to stop; a running job is put back in the queue. True once stopped."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.store.claim()
                if job is None:
                    self.idle.idle()
                    self._wake.wait(IDLE_POLL_SECONDS)
                    self._wake.clear()
                    continue
                self.process(job)
            except Exception:  # the database itself failed (locked, disk full): retry later
                self.log.exception("worker_error")
                self._stop.wait(IDLE_POLL_SECONDS)

    def process(self, job: Job) -> None:
        joblog = self.log.bind(job_id=job.id, path=job.path)
        joblog.info("job_started", attempt=job.attempts)
        faults.checkpoint("claimed")
        self.current = job
        profile = self.settings.profile(job.path)
        try:
            outputs.check_writable(Path(job.path).parent)  # before spending the work
            engine = self._engine(profile.model)
            self.idle.busy(engine)  # loads the model again if idleness unloaded it
            with self.speakers.beside(job.path, profile) as diarizing:
                transcript = engine.transcribe(
                    job.path, decode_options(profile), self._progress_reporter(job)
                )
                if diarizing:
                    transcript = diarizing.label(transcript)
            written = self._write(job, transcript, profile)
        except JobStopped:
            if self._stop.is_set():
                self._db(self.store.requeue, job.id)
                joblog.info("job_requeued", reason="shutdown")
            else:
                joblog.info("job_cancelled")
            return
        except AudioError as exc:
            self._fail(job, str(exc), transient=exc.transient, joblog=joblog)
            return
        except ModelError as exc:
            self._fail(job, f"{job.path}: model error: {exc}", transient=False, joblog=joblog)
            return
        except OSError as exc:  # writing outputs: disk full, permissions, ...
            reason = f"{job.path}: cannot write transcripts: {exc.strerror or exc}"
            if exc.filename:
                reason += f" ({exc.filename})"
            self._fail(job, reason, transient=True, joblog=joblog)
            return
        except Exception as exc:  # a bug or an engine failure: record it, keep the daemon
            joblog.exception("job_crashed")
            self._fail(job, f"{job.path}: unexpected error: {exc!r}", transient=True, joblog=joblog)
            return
        finally:
            self.current = None
            self.idle.done()
        faults.checkpoint("finish")
        finished = self._db(
            self.store.finish,
            job.id,
            outputs=written,
            audio_seconds=transcript.audio_seconds,
            processing_seconds=transcript.processing_seconds,
            model=transcript.model,
            language=transcript.language,
        )
        if not finished:
            joblog.info("job_cancelled", outputs=written)
            return
        joblog.info(
            "job_done",
            audio_seconds=transcript.audio_seconds,
            processing_seconds=transcript.processing_seconds,
            speed=round(transcript.realtime_factor, 1),
            segments=len(transcript.segments),
        )

    def _engine(self, model: str) -> Engine:
        if model not in self.engines:
            self.engines[model] = engine_for(self.settings, model)
        return self.engines[model]

    def _write(self, job: Job, transcript: Transcript, profile: Profile) -> list[str]:
        source = Path(job.path)
        key = path_key(source)
        paths = outputs.plan(
            source,
            profile.formats,
            media_extensions=self.settings.media_extensions,
            may_replace=lambda p: self.store.output_owner(p) == key,
        )
        # Claim the names before writing: a retry after a crash mid-write then knows
        # they are its own to replace, instead of writing `talk.m4a.txt` beside them.
        self._db(self.store.plan_outputs, job.id, [str(p) for p in paths.values()])
        faults.checkpoint("outputs.write")
        return outputs.write(transcript, paths, layout(profile))

    def _fail(self, job: Job, reason: str, *, transient: bool, joblog) -> None:
        retry_after = None
        if transient and job.attempts < self.settings.max_attempts:
            retry_after = self.settings.retry_backoff_seconds * 2 ** (job.attempts - 1)
        state = self._db(self.store.fail, job.id, reason, retry_after=retry_after)
        joblog.error("job_failed", error=reason, state=state, retry_in=retry_after)

    def _db(self, call: Callable[..., T], *args, **kwargs) -> T:
        """A database write the job's outcome depends on: retried with backoff while the
        database is locked (or the disk is full), so a finished job is not left running."""
        delay = DB_RETRY_SECONDS
        while True:
            try:
                return call(*args, **kwargs)
            except sqlite3.Error as exc:
                self.log.warning("database_retry", error=str(exc), retry_in=delay)
                if self._stop.wait(delay):
                    raise  # shutting down: recover() puts the job back at the next start
                delay = min(delay * 2, DB_RETRY_MAX_SECONDS)

    def _progress_reporter(self, job: Job):
        last = 0.0

        def report(fraction: float) -> None:
            nonlocal last
            if self._stop.is_set():
                raise JobStopped()
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL_SECONDS or fraction >= 1.0:
                last = now
                faults.checkpoint("transcribe")
                try:
                    running = self.store.set_progress(job.id, 100.0 * fraction)
                except sqlite3.Error:  # locked: progress can wait for the next report
                    return
                if not running:
                    raise JobStopped()  # cancelled

        return report
