"""Memory handed back when idle: after `idle_unload_seconds` with nothing queued, the
models leave the process (the model, its ONNX Runtime sessions and decoders, MLX's buffer
cache) and the C heap is trimmed; the next job loads them again.

A resident model costs a few hundred MB for tiny.en and GBs for the large models; on a
Mac that memory is the GPU's too (unified memory). Figures: README, "Memory back when idle".
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
import time
from collections.abc import Callable

import psutil

from watcherd import log
from watcherd.engine import Engine
from watcherd.engine.model import models
from watcherd.store import Store


def trim_heap() -> None:
    """Return the allocator's free pages to the system: glibc keeps what was freed in its
    heaps, where RSS still counts it, until asked (README: about half the freed memory)."""
    gc.collect()  # whatever a reference cycle still held
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl)
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_mb() -> float:
    return round(psutil.Process().memory_info().rss / 1e6, 1)


class IdleUnloader:
    """The worker tells it when it is idle and when a job starts; it unloads and reloads.
    `on_change(loaded)` lets the daemon show the state in `status`."""

    def __init__(
        self,
        seconds: float,
        store: Store,
        on_change: Callable[[bool], None] = lambda loaded: None,
    ):
        self.seconds = seconds
        self.store = store
        self.on_change = on_change
        self.unloaded = False
        self.log = log.get()
        self._busy_at = time.monotonic()

    def idle(self, now: float | None = None) -> bool:
        """Called when the worker found nothing to do; True when it unloaded now."""
        now = time.monotonic() if now is None else now
        if not self.seconds or self.unloaded or now - self._busy_at < self.seconds:
            return False
        if self.store.counts()["queued"]:  # a retry waiting its backoff: it comes soon
            return False
        before = rss_mb()
        count = models.unload_all()
        trim_heap()
        self.unloaded = True
        self.log.info("models_unloaded", models=count, idle_seconds=round(now - self._busy_at),
                      rss_mb_before=before, rss_mb_after=rss_mb())  # fmt: skip
        self.on_change(False)
        return True

    def busy(self, engine: Engine) -> None:
        """Called as a job starts: loads its model again if idleness unloaded it."""
        self._busy_at = time.monotonic()
        if self.unloaded:
            started = time.perf_counter()
            loaded = engine.load()
            self.unloaded = False
            self.log.info("models_reloaded", model=loaded.name, rss_mb=rss_mb(),
                          seconds=round(time.perf_counter() - started, 3))  # fmt: skip
            self.on_change(True)

    def done(self) -> None:
        """Called as a job ends: idleness counts from here."""
        self._busy_at = time.monotonic()
