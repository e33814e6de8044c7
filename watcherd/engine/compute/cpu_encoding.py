"""Encoding ahead on the CPU: the next batch encodes in a thread while this one decodes.

The decoder's steps are bound by memory reads, the encoder by arithmetic: side by side
they share the cores better than in turn. Windows are handed over one at a time, as the
VAD cuts them, so the first window of a file encodes while the VAD still looks for the
rest of its batch.

A window starts on one core while the caller says it is `busy` (cutting chunks,
decoding), on every core otherwise: a graph split over every core beside a busy third
thread waits for its share on the busy core at each operation, and slows the decoder
beside it. Likewise the decoder's own BLAS products keep to one thread while encoding
runs ahead, and get every core again once it is done (`idle`). Thread counts change
only here, in the caller's thread, when no encoding runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
from threadpoolctl import threadpool_limits

from watcherd.engine.compute.base import Batch, Encoding
from watcherd.engine.compute.encoder_graph import EncoderGraph


class Stopped(Exception):
    """Encoding ahead was abandoned (the transcription ended early)."""


class CPUEncoding(Encoding):
    def __init__(self, every_core: EncoderGraph, one_core: EncoderGraph):
        self.graphs = every_core, one_core
        self.pool = ThreadPoolExecutor(1, "encoder-ahead")
        self.stopped = threading.Event()
        self.caller_busy = threading.Event()
        self.blas: threadpool_limits | None = None
        self.running: Future | None = None

    def batch(self) -> Batch:
        return CPUBatch(self)

    def close(self) -> None:
        self.stopped.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._all_cores()

    def _all_cores(self) -> None:
        if self.blas is not None:
            self.blas.restore_original_limits()
            self.blas = None

    def submit(self, mel: np.ndarray) -> Future:
        if self.blas is None:
            self.blas = threadpool_limits(1, user_api="blas")
        self.running = self.pool.submit(self._encode, mel)
        return self.running

    def _encode(self, mel: np.ndarray) -> np.ndarray:
        if self.stopped.is_set():
            raise Stopped
        every_core, one_core = self.graphs
        return (one_core if self.caller_busy.is_set() else every_core).window(mel)

    @contextmanager
    def busy(self) -> Iterator[None]:
        self.caller_busy.set()
        try:
            yield
        finally:
            self.caller_busy.clear()

    def idle(self) -> None:
        if self.running is not None:
            self.running.result()
            self.running = None
        self._all_cores()


class CPUBatch(Batch):
    """A batch whose windows encode from the moment each is added."""

    def __init__(self, encoding: CPUEncoding):
        self.encoding = encoding
        self.windows: list[Future] = []

    def add(self, mel) -> None:
        # MLX arrays are made and evaluated in the caller's thread only.
        self.windows.append(self.encoding.submit(np.array(mel)))

    def features(self) -> np.ndarray:
        return np.stack([future.result() for future in self.windows])
