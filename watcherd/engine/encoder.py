"""The audio encoder: MLX's own on Metal and CUDA, an ONNX Runtime graph on the CPU."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import mlx.core as mx
import numpy as np
from mlx_whisper.whisper import Whisper
from threadpoolctl import threadpool_limits

from watcherd.engine import cpu
from watcherd.engine.encoder_graph import EncoderGraph


class Stopped(Exception):
    """Encoding ahead was abandoned (the transcription ended early)."""


def encode(model: Whisper, mel: mx.array) -> mx.array:
    """Encode a batch of mel windows (B, 3000, n_mels) into audio features (B, 1500, d);
    on the CPU path a window at a time (the graph spreads each one over every core)."""
    if not cpu.use_cpu_path(model):
        features = model.encoder(mel)
        mx.eval(features)
        return features
    return mx.array(cpu.shared(EncoderGraph, model)(np.array(mel)))


class Ahead:
    """Encodes the next batch while the current one decodes, on the CPU path.

    The decoder's steps are bound by memory reads, the encoder by arithmetic: side by side
    they share the two cores better than in turn. Windows are handed over one at a time,
    as the VAD cuts them, so the first window of a file encodes while the VAD still looks
    for the rest of its batch.
    A window starts on one core while the caller says it is `busy` (cutting chunks,
    decoding), on every core otherwise: a graph split over both cores beside a busy third
    thread ran each window at half speed (0.55-0.6 s instead of 0.28 s, each operation
    waiting for its share on the busy core), and slowed the decoder beside it. Likewise
    the decoder's own BLAS products keep to one thread while encoding runs ahead, and get
    every core again once it is done (`idle`).
    Thread counts change only here, in the caller's thread, when no encoding runs. On
    Metal and CUDA a batch encodes at once when its features are asked for."""

    def __init__(self, model: Whisper):
        self.model = model
        self.pool: ThreadPoolExecutor | None = None
        self.stopped = threading.Event()
        self.caller_busy = threading.Event()
        self.blas: threadpool_limits | None = None
        self.running: Future | None = None

    def __enter__(self) -> Ahead:
        if cpu.use_cpu_path(self.model):
            self.graphs = (
                cpu.shared(EncoderGraph, self.model),
                cpu.shared(EncoderGraph, self.model, 1),
            )
            self.pool = ThreadPoolExecutor(1, "encoder-ahead")
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self._all_cores()

    def _all_cores(self) -> None:
        if self.blas is not None:
            self.blas.restore_original_limits()
            self.blas = None

    def batch(self) -> Batch:
        """A new batch, to be given its windows one by one."""
        return Batch(self)

    def _submit(self, mel: np.ndarray) -> Future:
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
        """Windows starting meanwhile leave a core to the caller."""
        self.caller_busy.set()
        try:
            yield
        finally:
            self.caller_busy.clear()

    def idle(self) -> None:
        """Say that nothing more is submitted for now: once the encoding in flight is done,
        BLAS may use every core for the decoding that follows."""
        if self.running is not None:
            self.running.result()
            self.running = None
        self._all_cores()


class Batch:
    """One batch's windows, encoding (on the CPU path) from the moment each is added."""

    def __init__(self, ahead: Ahead):
        self.ahead = ahead
        self.windows: list = []  # futures on the CPU path, mel windows elsewhere

    def add(self, mel: mx.array) -> None:
        """A window (n_frames, n_mels)."""
        if self.ahead.pool is None:
            self.windows.append(mel)
        else:  # MLX arrays are made and evaluated in the caller's thread only
            self.windows.append(self.ahead._submit(np.array(mel)))

    def features(self) -> mx.array:
        """The batch's audio features (B, n_ctx, d), once every window is encoded."""
        if self.ahead.pool is None:
            return encode(self.ahead.model, mx.stack(self.windows))
        return mx.array(np.stack([future.result() for future in self.windows]))
