"""The command run after each finished job: `on_done` once its outputs are in place,
`on_failed` once it has failed for good (not while it is retried).

The command runs without a shell (write `sh -c '…'` for one), as the daemon's user, with
the job in environment variables and, after a done job, its JSON transcript on stdin:

    WATCHERD_JOB_ID, WATCHERD_SOURCE, WATCHERD_STATE ("done" or "failed"),
    WATCHERD_LANGUAGE, WATCHERD_AUDIO_SECONDS, WATCHERD_OUTPUT_<FORMAT> per output
    (WATCHERD_OUTPUT_TXT…), WATCHERD_ERROR (failed jobs), WATCHERD_HOOK_ATTEMPT

Nothing from the file or its transcript is ever put on the command line.

A hook never fails the job and never holds the queue longer than `hook_timeout_seconds`:
then its process group is killed (a shell's children too). Its exit code and the tail of
its output go to the log, and how it ended to the store, which `status` shows beside the
job. Each run is recorded before it starts and after it ends: a hook the daemon died in
runs again at the next start (`WATCHERD_HOOK_ATTEMPT` counts), one whose end is recorded
never runs again. So hooks should be idempotent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from watcherd.config import Settings
    from watcherd.store import Job, Store

OUTPUT_PREFIX = "WATCHERD_OUTPUT_"
ATTEMPT = "WATCHERD_HOOK_ATTEMPT"  # set: this process is a hook, or was started by one
VARIABLES = (
    "WATCHERD_JOB_ID",
    "WATCHERD_SOURCE",
    "WATCHERD_STATE",
    "WATCHERD_LANGUAGE",
    "WATCHERD_AUDIO_SECONDS",
    "WATCHERD_ERROR",
    ATTEMPT,
)
POLL_SECONDS = 0.1
STOP_GRACE_SECONDS = 2.0  # on shutdown: SIGTERM, then SIGKILL after this
TAIL_CHARS = 2000  # of stdout and of stderr, in the log


def is_job_variable(name: str) -> bool:
    """A variable the hook gets about its job (not a setting)."""
    return name in VARIABLES or name.startswith(OUTPUT_PREFIX)


def environment(job: Job, event: str, attempt: int, base: dict[str, str] | None = None) -> dict:
    """The daemon's environment with the job's variables, and only this job's."""
    inherited = os.environ if base is None else base
    env = {k: v for k, v in inherited.items() if not is_job_variable(k)}
    env |= {
        "WATCHERD_JOB_ID": str(job.id),
        "WATCHERD_SOURCE": job.path,
        "WATCHERD_STATE": event,
        "WATCHERD_LANGUAGE": job.language or "",
        "WATCHERD_AUDIO_SECONDS": "" if job.audio_seconds is None else str(job.audio_seconds),
        ATTEMPT: str(attempt),
    }
    if event == "failed":
        env["WATCHERD_ERROR"] = job.error or ""
    else:  # a failed job's outputs were planned, not written
        for output in job.outputs:
            env[OUTPUT_PREFIX + output.rsplit(".", 1)[-1].upper()] = output
    return env


@dataclass(frozen=True)
class Outcome:
    state: str  # "done" (exit 0), "failed" or "timed_out", as the store records it
    exit_code: int | None  # negative: killed by that signal; None: it never started
    error: str | None  # what `status` shows: "exit 3: <its last line on stderr>"
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0


def run(
    argv: tuple[str, ...],
    env: dict[str, str],
    stdin: str | None,
    timeout: float,
    stop: threading.Event,
) -> Outcome | None:
    """Run a hook to its end, or kill it at `timeout`. None when `stop` was set meanwhile
    (the daemon is stopping): the hook is stopped and its run does not count as ended.
    Stdin, stdout and stderr are temp files, not pipes: a hook that never reads its input
    cannot block, and a child it left behind cannot hold the worker on an open pipe."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as given, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err:  # fmt: skip
        given.write((stdin or "").encode())
        given.seek(0)
        try:
            # Its own process group: a timeout kills what the hook started, too.
            proc = subprocess.Popen(
                argv, stdin=given, stdout=out, stderr=err, env=env, start_new_session=True
            )
        except OSError as exc:
            return Outcome("failed", None, f"cannot run {argv[0]}: {exc.strerror or exc}")
        while True:
            try:
                code = proc.wait(POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if stop.is_set():
                    _kill(proc, signal.SIGTERM, STOP_GRACE_SECONDS)
                    return None
                if time.monotonic() - started >= timeout:
                    _kill(proc, signal.SIGKILL, 0)
                    return Outcome(
                        "timed_out",
                        proc.returncode,
                        f"timed out after {timeout:g} s (killed)",
                        _tail(out),
                        _tail(err),
                        time.monotonic() - started,
                    )
        stdout, stderr = _tail(out), _tail(err)
    seconds = time.monotonic() - started
    if code == 0:
        return Outcome("done", 0, None, stdout, stderr, seconds)
    how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    error = f"{how}: {last}" if last else how
    return Outcome("failed", code, error, stdout, stderr, seconds)


def _kill(proc: subprocess.Popen, first: signal.Signals, grace: float) -> None:
    """Signal the hook's whole process group; SIGKILL whatever outlives `grace`."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, first)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _tail(file: IO[bytes]) -> str:
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - 4 * TAIL_CHARS))
    return file.read().decode("utf-8", errors="replace")[-TAIL_CHARS:]


class Hooks:
    """Runs the hooks that finished jobs are due, and records each run."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        stop: threading.Event,
        db: Callable = lambda call, *args, **kwargs: call(*args, **kwargs),
    ):
        self.settings = settings
        self.store = store
        self.stop = stop
        self.db = db  # the worker's retrying database call: a run is never recorded twice
        from watcherd import log  # structlog: not for the commands that only load settings

        self.log = log.get()

    def run_due(self) -> None:
        """Run every due hook in job order: those just recorded, and those a crash (or a
        stop) interrupted."""
        for due in self.store.due_hooks():
            if self.stop.is_set():
                return
            job = due.job
            joblog = self.log.bind(job_id=job.id, path=job.path)
            profile = self.settings.profile(job.path)
            key = "on_done" if due.event == "done" else "on_failed"
            argv = getattr(profile, key)
            if not argv:
                self.db(self.store.drop_hook, job.id)
                joblog.info("hook_dropped", reason=f"{key} is no longer set")
                continue
            if due.attempts >= self.settings.max_attempts:  # it took the daemon down each time
                error = f"interrupted {due.attempts} times (the daemon stopped or crashed)"
                self.db(self.store.end_hook, job.id, "failed", error=error)
                joblog.error("hook_failed", hook=key, error=error)
                continue
            attempt = self.db(self.store.start_hook, job.id)
            joblog.info("hook_started", hook=key, command=list(argv), attempt=attempt)
            env = environment(job, due.event, attempt)
            outcome = run(argv, env, due.input, profile.hook_timeout_seconds, self.stop)
            if outcome is None:
                joblog.info("hook_interrupted", hook=key, attempt=attempt)
                return
            self.db(
                self.store.end_hook,
                job.id,
                outcome.state,
                exit_code=outcome.exit_code,
                error=outcome.error,
            )
            report = joblog.info if outcome.state == "done" else joblog.warning
            report(
                f"hook_{outcome.state}",
                hook=key,
                attempt=attempt,
                exit_code=outcome.exit_code,
                error=outcome.error,
                seconds=round(outcome.seconds, 2),
                stdout=outcome.stdout,
                stderr=outcome.stderr,
            )
