"""The daemon's part in a queue that several machines share: its heartbeat, and the
database's outages.

Every `lease_seconds / 3` the heartbeat renews the lease of the jobs this worker runs,
reports the worker (host, pid, model, current job, speed) for `watcherd status`, and puts
back in the queue the jobs whose worker stopped renewing them (a machine that died for
good), for any machine to take. The same thread runs on SQLite, where the only worker is
this daemon: its leases never lapse while it lives.

An outage (the server restarting, the network gone) is said once, when it starts and when
it ends, not once per attempt: `Outage`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable

from watcherd import log
from watcherd.store import Store

BEATS_PER_LEASE = 3


class WorkerNameTaken(RuntimeError):
    """Another machine, alive, works on the queue under this daemon's worker name: the two
    would take each other's jobs for their own."""


def check_name(store: Store, lease_seconds: float) -> None:
    """Refuse a worker name that a live worker on another host reports under."""
    host = socket.gethostname()
    for worker in store.workers():
        age = time.time() - worker.heartbeat_at
        if worker.name == store.worker and worker.host != host and age < lease_seconds:
            raise WorkerNameTaken(
                f"worker name {worker.name!r} is in use by host {worker.host!r} (pid "
                f"{worker.pid}, heartbeat {age:.0f} s ago): give each machine its own "
                "`worker_name`"
            )


class Outage:
    """Tracks whether the database answers, and says so in one line when that changes."""

    def __init__(self, store: Store, name: str):
        self.store = store
        self.name = name  # who noticed: "worker", "heartbeat", "watcher"
        self.since: float | None = None
        self._lock = threading.Lock()

    def failed(self, exc: Exception) -> None:
        with self._lock:
            first, self.since = self.since is None, self.since or time.time()
        if first:
            error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.get().warning("database_unavailable", by=self.name, error=error)

    def ok(self) -> None:
        with self._lock:
            since, self.since = self.since, None
        if since is not None:
            log.get().info("database_back", by=self.name, after=round(time.time() - since, 1))


class Heartbeat:
    """Renews this worker's leases and reclaims expired ones, on its own thread: a long
    decode or a model load cannot hold it up."""

    def __init__(
        self,
        store: Store,
        *,
        lease_seconds: float,
        poison_after: int,
        report: Callable[[], dict],
    ):
        self.store = store
        self.lease_seconds = lease_seconds
        self.poison_after = poison_after
        self.report = report  # the worker's model, current job and speed, now
        self.started_at = time.time()
        self.outage = Outage(store, "heartbeat")
        self._reclaim_after = 0.0  # monotonic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcherd-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(self.store.errors):  # down: the row ages in the fleet
            self.store.leave()

    def beat(self) -> None:
        """One beat: renew, report, reclaim what dead workers left (not in the lease after
        an outage: the others renew theirs as soon as the database is back)."""
        self.store.heartbeat(pid=os.getpid(), started_at=self.started_at, **self.report())
        if time.monotonic() < self._reclaim_after:
            return
        requeued, failed = self.store.recover(self.poison_after, self.lease_seconds, mine=False)
        if requeued or failed:
            log.get().warning("leases_expired", requeued=requeued, failed=failed,
                              lease_seconds=self.lease_seconds)  # fmt: skip

    def _run(self) -> None:
        while not self._stop.wait(self.lease_seconds / BEATS_PER_LEASE):
            try:
                self.beat()
            except self.store.errors as exc:
                self.outage.failed(exc)
                self._reclaim_after = time.monotonic() + self.lease_seconds
                continue
            self.outage.ok()
