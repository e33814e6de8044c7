"""The one sequential worker: claim a job, transcribe it, write outputs, record the outcome,
then notify and run the job's hook.

It runs on its own thread inside the daemon and keeps the engine (and so the model)
loaded between jobs. Errors end in the job's row, never in the worker: bad input fails
that job with a message naming the file and the cause, and the next job runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from watcherd import faults, fleet, hooks, log, notify, outputs, subtitled
from watcherd.config import Profile, Settings
from watcherd.diarize.background import Pending, Speakers
from watcherd.engine import AudioError, Cancelled, Checkpoint, Engine, ModelError, Request
from watcherd.engine.audio.decode import SAMPLE_RATE
from watcherd.idle import IdleUnloader
from watcherd.profiles import decode_options, engine_for, md_folder, placement, style
from watcherd.store import DECODED, DECODING, Job, Store, content_hash, path_key
from watcherd.transcript import Transcript, segments_from_json, segments_to_json

PROGRESS_INTERVAL_SECONDS = 1.0
IDLE_POLL_SECONDS = 2.0  # jobs may also arrive from other processes (`watcherd add`)
DB_RETRY_SECONDS = 0.5
DB_RETRY_MAX_SECONDS = 30.0

T = TypeVar("T")


class JobStopped(Exception):
    """The daemon is shutting down: the jobs in the stream go back to the queue."""

    reason = "shutdown"


class Paused(JobStopped):
    """`watcherd pause`: the jobs in the stream go back to the queue, their work saved."""

    reason = "paused"


class Worker:
    def __init__(
        self, settings: Settings, store: Store, engine: Engine, idle: IdleUnloader | None = None
    ):
        self.settings = settings
        self.store = store
        self.engines = {engine.model_name: engine}  # one per model an inbox asks for
        self.idle = idle or IdleUnloader(settings.idle_unload_seconds, store)
        self.log = log.get()
        self.active: dict[int, Job] = {}  # claimed and in the engine's stream
        self._next: Job | None = None  # claimed, for the next stream (other settings)
        self.speakers = Speakers(settings.model_cache_dir)  # loads when a file needs it
        self.diarizing: dict[int, Pending] = {}  # beside the stream, from each job's start
        self._unlabelled: dict[int, tuple[Job, Transcript]] = {}  # decoded, speakers to come
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.hooks = hooks.Hooks(settings, store, self._stop, self._db)
        self.notifications: notify.Notifications | notify.Silent = notify.Silent()
        self.outage = fleet.Outage(store, "worker")
        self.last_speed: float | None = None  # × realtime of the latest finished job

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="watcherd-worker", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the worker to stop; running jobs are put back in the queue. True once stopped."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def report(self) -> dict:
        """What this worker does now, for the fleet (`Store.heartbeat`)."""
        job = next(iter(list(self.active.values())), None)  # the worker thread changes it
        running = job.id if job else None
        model = self.settings.profile(job.path).model if job else None
        return {"model": model or self.settings.model, "job_id": running,
                "speed": self.last_speed}  # fmt: skip

    @property
    def claimed(self) -> list[Job]:
        """Every job this worker holds: in its stream, or waiting for the next one."""
        return [*self.active.values(), *([self._next] if self._next else [])]

    def run(self) -> None:
        self.notifications = notify.start(self.settings)
        try:
            while not self._stop.is_set():
                try:
                    self.hooks.run_due()  # the last jobs', or those a crash interrupted
                    paused = self.store.paused()
                    self.outage.ok()  # the database answers (again)
                    if paused:
                        self._release_next("paused")
                        self._wake.wait(IDLE_POLL_SECONDS)
                        self._wake.clear()
                        continue
                    job, self._next = self._next or self.store.claim(), None
                    if job is None:
                        self.idle.idle()
                        self._wake.wait(IDLE_POLL_SECONDS)
                        self._wake.clear()
                        continue
                    self.process(job)
                except self.store.errors as exc:  # locked, disk full, the server away
                    self.outage.failed(exc)  # said once, not each time
                    self._stop.wait(IDLE_POLL_SECONDS)
                except Exception:  # a bug: said with its trace; keep the daemon
                    self.log.exception("worker_error")
                    self._stop.wait(IDLE_POLL_SECONDS)
            self._release_next("shutdown")
        finally:
            self.notifications.close()  # what a flood held back is shown now

    def _release_next(self, reason: str) -> None:
        """A job claimed for a stream that will not run now goes back to the queue."""
        if self._next is not None:
            self._db(self.store.requeue, self._next.id)
            self.log.info("job_requeued", job_id=self._next.id, path=self._next.path,
                          reason=reason)  # fmt: skip
            self._next = None

    def process(self, first: Job) -> None:
        """Transcribe `first`, and with it, in one stream of windows, the jobs queued after
        it that are transcribed the same way (same model and decode options): claimed one
        by one as the stream is ready for the next file, so a queue of short files shares
        its batches. Each job still ends on its own: finished, failed or cancelled."""
        profile = self.settings.profile(first.path)
        options = decode_options(profile)
        try:
            engine = self._engine(profile.model)
            self.idle.busy(engine)  # loads the model again if idleness unloaded it
            engine.validate(options)
            for request, outcome in engine.stream(self._requests(first, options)):
                self._finish(request.tag, outcome)
                self._finish_labelled(wait=False)
            self._finish_labelled(wait=True)
        except ModelError as exc:  # the model cannot load, or cannot do what is asked
            for job in list(self.active.values()) or [first]:
                self._fail(job, f"{job.path}: model error: {exc}", transient=False)
        except JobStopped as stop:  # shutdown or pause: the stream's jobs go back, work saved
            for job in self.active.values():
                self._db(self.store.requeue, job.id)
                self.log.info("job_requeued", job_id=job.id, path=job.path, reason=stop.reason)
        except Exception as exc:  # a bug or an engine failure: record it, keep the daemon
            self.log.exception("stream_crashed", jobs=sorted(self.active))
            for job in list(self.active.values()):
                self._fail(job, f"{job.path}: unexpected error: {exc!r}", transient=True)
        finally:
            for pending in self.diarizing.values():
                pending.cancel()
            self.active.clear()
            self.diarizing.clear()
            self._unlabelled.clear()
            self.idle.done()

    def _requests(self, first: Job, options) -> Iterator[Request]:
        """`first`, then each next queued job while it shares the stream (`_stream_key`)."""
        key, job = self._stream_key(first), first
        while job is not None:
            if self._start(job):
                self._db(self.store.set_stage, job.id, DECODING)
                yield Request(job.path, options, self._progress_reporter(job), tag=job,
                              save=self._saver(job), resume=self._resume(job))  # fmt: skip
            if self._stop.is_set():
                return
            job = None if key[2] is not None else self._db(self.store.claim)  # a suspect: alone
            if job is not None and self._stream_key(job) != key:
                self._next, job = job, None

    def _stream_key(self, job: Job) -> tuple:
        """Jobs with equal keys share a stream. A job a crash interrupted is a suspect: it
        runs alone, so that the next crash, if any, is laid at its door (`Store.recover`)."""
        profile = self.settings.profile(job.path)
        return profile.model, decode_options(profile), job.id if job.interrupted else None

    def _start(self, job: Job) -> bool:
        """Take a claimed job into the stream, unless it is to be skipped (it has subtitles)
        or its folders cannot take transcripts."""
        joblog = self.log.bind(job_id=job.id, path=job.path)
        joblog.info("job_started", attempt=job.attempts)
        faults.checkpoint("claimed")
        profile = self.settings.profile(job.path)
        if profile.skip_subtitled and (reason := self._has_subtitles(job)):
            self._skip(job, reason, joblog)
            return False
        self.active[job.id] = job
        try:
            outputs.check_writable(Path(job.path).parent)  # before spending the work
            if vault := md_folder(profile):
                outputs.check_writable(vault, create=True)
        except OSError as exc:
            self._fail_writing(job, exc)
            return False
        if pending := self.speakers.start(job.path, profile):
            self.diarizing[job.id] = pending  # on its own thread while the engine decodes
        return True

    def _finish_labelled(self, wait: bool) -> None:
        """Finish the decoded jobs whose speakers are known (`wait`: all of them, waiting)."""
        for job, transcript in list(self._unlabelled.values()):
            pending = self.diarizing[job.id]
            while wait and not pending.wait(IDLE_POLL_SECONDS):
                if self._stop.is_set():
                    raise JobStopped()  # back to the queue; its transcription was saved
            if pending.done:
                del self._unlabelled[job.id]
                self._record(job, transcript)

    def _finish(self, job: Job, outcome: Transcript | Exception) -> None:
        """A job's outcome from the stream: recorded now, or, when it is decoded and its
        speakers are still being found, once they are (the stream decodes on meanwhile)."""
        if isinstance(outcome, Transcript):
            self._db(self.store.set_stage, job.id, DECODED)
            if (pending := self.diarizing.get(job.id)) and not pending.done:
                self._unlabelled[job.id] = (job, outcome)
                return
        self._record(job, outcome)

    def _record(self, job: Job, outcome: Transcript | Exception) -> None:
        """Record how a job ended: its transcripts written, or why it failed."""
        joblog = self.log.bind(job_id=job.id, path=job.path)
        profile = self.settings.profile(job.path)
        diarizing = self.diarizing.pop(job.id, None)
        try:
            if isinstance(outcome, Transcript) and diarizing:
                outcome = diarizing.label(outcome)  # done by now: it only attributes
            if isinstance(outcome, Cancelled):
                joblog.info("job_cancelled")
                return
            if isinstance(outcome, AudioError):
                self._fail(job, str(outcome), transient=outcome.transient)
                return
            if isinstance(outcome, Exception):
                raise outcome
            written = self._write(job, outcome, profile)
        except OSError as exc:  # writing outputs: disk full, permissions, ...
            self._fail_writing(job, exc)
            return
        except Exception as exc:  # a bug: record it, keep the daemon
            joblog.exception("job_crashed")
            self._fail(job, f"{job.path}: unexpected error: {exc!r}", transient=True)
            return
        finally:
            if diarizing:
                diarizing.cancel()  # a failed or cancelled job's diarization stops
            self.active.pop(job.id, None)
        faults.checkpoint("finish")
        finished = self._db(
            self.store.finish,
            job.id,
            outputs=written,
            audio_seconds=outcome.audio_seconds,
            processing_seconds=outcome.processing_seconds,
            model=outcome.model,
            language=outcome.language,
            # the hook's stdin: the JSON output's text, whether or not json is written
            hook_input=outputs.render_json(outcome) if profile.on_done else None,
        )
        if not finished:
            joblog.info("job_cancelled", outputs=written)
            return
        self.last_speed = outcome.realtime_factor
        joblog.info(
            "job_done",
            audio_seconds=outcome.audio_seconds,
            processing_seconds=outcome.processing_seconds,
            speed=round(outcome.realtime_factor, 1),
            segments=len(outcome.segments),
            windows=outcome.windows,
        )
        if profile.notify:
            ending = notify.Ending(job.path, "done", outcome.text, outcome.audio_seconds)
            self.notifications.ended(ending)

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
            placement=placement(profile, transcript),
            media_extensions=self.settings.media_extensions,
            may_replace=lambda p: self.store.output_owner(p) == key,
        )
        # Claim the names before writing: a retry after a crash mid-write then knows
        # they are its own to replace, instead of writing `talk.m4a.txt` beside them.
        # A job that is no longer ours (cancelled, or its lease lapsed and another machine
        # took it) writes nothing: outputs are written once.
        if not self._db(self.store.plan_outputs, job.id, [str(p) for p in paths.values()]):
            return []
        faults.checkpoint("outputs.write")
        return outputs.write(transcript, paths, style(profile))

    def _has_subtitles(self, job: Job) -> str | None:
        return subtitled.reason(
            Path(job.path),
            ours=lambda p: self.store.output_owner(p) is not None,
            media_extensions=self.settings.media_extensions,
        )

    def _skip(self, job: Job, reason: str, joblog) -> None:
        if self._db(self.store.skip, job.id, reason):
            joblog.info("job_skipped", reason=reason)

    def _fail(self, job: Job, reason: str, *, transient: bool) -> None:
        self.active.pop(job.id, None)
        profile = self.settings.profile(job.path)
        retry_after = None
        if transient and job.attempts < self.settings.max_attempts:
            retry_after = self.settings.retry_backoff_seconds * 2 ** (job.attempts - 1)
        state = self._db(self.store.fail, job.id, reason, retry_after=retry_after,
                         hook=bool(profile.on_failed))  # fmt: skip
        self.log.error("job_failed", job_id=job.id, path=job.path, error=reason, state=state,
                       retry_in=retry_after)  # fmt: skip
        if state == "failed" and profile.notify:
            self.notifications.ended(notify.Ending(job.path, "failed", reason))

    def _fail_writing(self, job: Job, exc: OSError) -> None:
        reason = f"{job.path}: cannot write transcripts: {exc.strerror or exc}"
        if exc.filename:
            reason += f" ({exc.filename})"
        self._fail(job, reason, transient=True)

    def _db(self, call: Callable[..., T], *args, **kwargs) -> T:
        """A database write the job's outcome depends on: retried with backoff while the
        database is locked (or the disk is full), so a finished job is not left running."""
        delay = DB_RETRY_SECONDS
        while True:
            try:
                return call(*args, **kwargs)
            except self.store.errors as exc:
                error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                self.log.warning("database_retry", error=error, retry_in=delay)
                if self._stop.wait(delay):
                    raise  # shutting down: recover() puts the job back at the next start
                delay = min(delay * 2, DB_RETRY_MAX_SECONDS)

    def _progress_reporter(self, job: Job):
        last = 0.0

        def report(fraction: float) -> None:
            nonlocal last
            if self._stop.is_set():
                raise JobStopped()  # the whole stream stops
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL_SECONDS or fraction >= 1.0:
                last = now
                faults.checkpoint("transcribe")
                try:
                    running = self.store.set_progress(job.id, 100.0 * fraction)
                    paused = self.store.paused()
                except self.store.errors:  # locked, or away: progress can wait
                    return
                if not running:
                    raise Cancelled(job.path)  # this job only
                if paused:
                    raise Paused()  # parks at this checkpoint: what is settled is saved

        return report

    def _saver(self, job: Job):
        """Save a job's settled work as it goes: after a crash it resumes from there."""

        def save(checkpoint: Checkpoint) -> None:
            faults.checkpoint("progress.save")
            self._db(self.store.save_checkpoint, job.id, job.sha256, {
                "until": checkpoint.until,
                "segments": segments_to_json(checkpoint.segments),
                "language": checkpoint.language,
                "probability": checkpoint.probability,
            })  # fmt: skip
            self.log.info("progress_saved", job_id=job.id, path=job.path,
                          until=round(checkpoint.until / SAMPLE_RATE, 2),
                          windows=checkpoint.windows)  # fmt: skip

        return save

    def _resume(self, job: Job) -> Checkpoint | None:
        """The work a job saved before it was interrupted, if its file is unchanged."""
        saved = self._db(self.store.checkpoints, job.id, job.sha256)
        if not saved:
            return None
        try:
            unchanged = content_hash(Path(job.path)) == job.sha256
        except OSError:
            unchanged = False  # the engine says why the file cannot be read
        if not unchanged:
            self._db(self.store.clear_checkpoints, job.id)
            self.log.info("progress_dropped", job_id=job.id, path=job.path,
                          reason="the file changed since its work was saved")  # fmt: skip
            return None
        faults.checkpoint("resume")
        last = saved[-1]
        segments = tuple(s for row in saved for s in segments_from_json(row["segments"]))
        self.log.info("job_resumed", job_id=job.id, path=job.path,
                      at=round(last["until"] / SAMPLE_RATE, 2))  # fmt: skip
        return Checkpoint(last["until"], segments, last["language"], last["probability"])
