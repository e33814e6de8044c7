"""The daemon: one instance per database, the watcher and the worker, and a clean stop.

SIGTERM (launchd, systemd) and SIGINT (Ctrl-C) stop it cleanly: it stops taking jobs,
puts the running job back in the queue, closes the database and exits 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

from watcherd import blas, log, outputs
from watcherd.config import Settings
from watcherd.idle import IdleUnloader
from watcherd.instance import InstanceLock
from watcherd.profiles import engine_for
from watcherd.store import Store
from watcherd.watcher import Watcher
from watcherd.worker import Worker

STOP_TIMEOUT_SECONDS = 8.0
NICENESS = 10  # a background transcriber must not make the desktop (or `status`) sluggish


def lower_priority(niceness: int = NICENESS) -> None:
    """Run at background priority. Linux keeps niceness per thread, so every thread that
    exists already is lowered too (OpenBLAS starts its pool when the library loads);
    threads started later inherit it."""
    target = max(os.getpriority(os.PRIO_PROCESS, 0), niceness)
    tasks = Path("/proc/self/task")
    for tid in [int(t) for t in os.listdir(tasks)] if tasks.is_dir() else [0]:
        with contextlib.suppress(OSError):  # a thread that just ended
            os.setpriority(os.PRIO_PROCESS, tid, target)


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
        settings = self.settings
        lock = InstanceLock(settings.queue.lock)
        engine = engine_for(settings)
        info = {
            "pid": os.getpid(),
            "started_at": time.time(),
            "model": settings.model,
            "blas": blas.in_use(),
            "inboxes": [str(p) for p in settings.inbox_paths],
            "phase": "starting",  # until the models are loaded and files are taken
        }
        # The inboxes exist as soon as `status` says the daemon is starting, before the
        # models load: files dropped meanwhile are found by the watcher's first scan.
        for inbox in settings.inbox_paths:
            inbox.mkdir(parents=True, exist_ok=True)
        lock.acquire(info)
        lower_priority()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.request_stop)
        store = Store(settings.database, busy_timeout=settings.busy_timeout_seconds)
        code = 0
        try:
            # Jobs a crash left running may have left a temp file beside their outputs.
            outputs.discard_temps(p for job in store.jobs(state="running") for p in job.outputs)
            interrupted = [job.id for job in store.jobs(state="running")]
            requeued, failed = store.recover(settings.poison_after_crashes)
            if requeued or failed:
                self.log.info("recovered", requeued=requeued, failed=failed)
            for job in map(store.get, interrupted):
                if job.state == "failed":
                    self.log.error("job_failed", job_id=job.id, path=job.path, error=job.error)
                else:
                    self.log.info("job_waits", job_id=job.id, path=job.path, reason=job.waits)
            # Every model an inbox names is converted and checked now (a bad name exits 78
            # at start, not at the first file); the default is loaded last, to stay cached.
            self.log.info("loading_models", models=settings.models)
            for model in reversed(settings.models):
                loaded = engine_for(settings, model).load()
                self.log.info(
                    "model_loaded",
                    model=model,
                    path=str(loaded.path),
                    dtype=str(loaded.dtype),
                    seconds=round(loaded.load_seconds, 2),
                    compute=loaded.compute.name,
                    blas=info["blas"],
                )
            info |= {"phase": "ready", "compute": loaded.compute.name, "model_loaded": True}
            del loaded  # the model cache alone holds the models, so idleness can free them
            idle = IdleUnloader(
                settings.idle_unload_seconds,
                store,
                on_change=lambda present: lock.update(info | {"model_loaded": present}),
            )
            worker = Worker(settings, store, engine, idle)
            watcher = Watcher(settings, store, on_queued=worker.wake)
            watcher.start()
            worker.start()
            lock.update(info)
            self.log.info("daemon_started", pid=os.getpid(), database=str(settings.database))
            while not self._stop.wait(0.5):
                if not worker.alive:
                    self.log.error("worker_died")
                    code = 1  # an error exit: launchd and systemd restart the daemon
                    break
            stopped = worker.stop(STOP_TIMEOUT_SECONDS)
            watcher.stop(timeout=1.0)
            if not stopped and worker.claimed:
                self.log.warning("worker_did_not_stop", timeout=STOP_TIMEOUT_SECONDS)
                for job in worker.claimed:
                    store.requeue(job.id)
        finally:
            store.close()
            lock.release()
        self.log.info("daemon_stopped", code=code)
        return code
