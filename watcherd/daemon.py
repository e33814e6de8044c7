"""The daemon: one instance per database, the watcher and the worker, and a clean stop.

SIGTERM (launchd, systemd) and SIGINT (Ctrl-C) stop it cleanly: it stops taking jobs,
puts the running job back in the queue, closes the database and exits 0.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
import time
from pathlib import Path

from watcherd import blas, log
from watcherd.config import Settings
from watcherd.store import Store

STOP_TIMEOUT_SECONDS = 8.0


class AlreadyRunning(RuntimeError):
    def __init__(self, pid: int | None, lock_path: Path):
        super().__init__(
            f"watcherd is already running (pid {pid or 'unknown'}) on this database; "
            f"lock: {lock_path}"
        )
        self.pid = pid


def lock_path(settings: Settings) -> Path:
    return settings.database.with_name(settings.database.name + ".lock")


class InstanceLock:
    """An exclusive flock beside the database. The kernel drops it when the process dies,
    even by kill -9, so a stale lock never blocks the next start."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, info: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(read_lock_info(self.path).get("pid"), self.path) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def read_lock_info(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def running_daemon(settings: Settings) -> dict | None:
    """The running daemon's info (pid, start time, model, ...), or None if none runs."""
    path = lock_path(settings)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_lock_info(path) or {"pid": None}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class Daemon:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.log = log.get()
        self._stop = threading.Event()

    def request_stop(self, signum: int | None = None, _frame=None) -> None:
        name = signal.Signals(signum).name if signum else "request"
        self.log.info("stop_requested", signal=name)
        self._stop.set()

    def run(self) -> int:
        # Imported here, not at the top: `watcherd status` imports this module for
        # running_daemon() and must answer quickly, without loading MLX and Whisper.
        from watcherd import outputs
        from watcherd.watcher import Watcher
        from watcherd.worker import Worker, engine_for

        settings = self.settings
        lock = InstanceLock(lock_path(settings))
        engine = engine_for(settings)
        info = {
            "pid": os.getpid(),
            "started_at": time.time(),
            "model": settings.model,
            "backend": settings.backend,
            "blas": blas.in_use(),
            "inboxes": [str(p) for p in settings.inbox_paths],
        }
        lock.acquire(info)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.request_stop)
        store = Store(settings.database, busy_timeout=settings.busy_timeout_seconds)
        code = 0
        try:
            # Jobs a crash left running may have left a temp file beside their outputs.
            outputs.discard_temps(p for job in store.jobs(state="running") for p in job.outputs)
            requeued, failed = store.recover(settings.max_attempts)
            if requeued or failed:
                self.log.info("recovered", requeued=requeued, failed=failed)
            # Every model an inbox names is converted and checked now (a bad name exits 78
            # at start, not at the first file); the default is loaded last, to stay cached.
            for model in reversed(settings.models):
                loaded = engine_for(settings, model).load()
                self.log.info(
                    "model_loaded",
                    model=model,
                    path=str(loaded.path),
                    dtype=str(loaded.dtype),
                    seconds=round(loaded.load_seconds, 2),
                    blas=info["blas"],
                )
            worker = Worker(settings, store, engine)
            watcher = Watcher(settings, store, on_queued=worker.wake)
            watcher.start()
            worker.start()
            self.log.info("daemon_started", pid=os.getpid(), database=str(settings.database))
            while not self._stop.wait(0.5):
                if not worker.alive:
                    self.log.error("worker_died")
                    code = 1  # an error exit: launchd and systemd restart the daemon
                    break
            stopped = worker.stop(STOP_TIMEOUT_SECONDS)
            watcher.stop(timeout=1.0)
            if not stopped and worker.current is not None:
                self.log.warning("worker_did_not_stop", timeout=STOP_TIMEOUT_SECONDS)
                store.requeue(worker.current.id)
        finally:
            store.close()
            lock.release()
        self.log.info("daemon_stopped", code=code)
        return code
