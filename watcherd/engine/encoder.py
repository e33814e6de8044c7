"""The audio encoder: MLX's own on Metal and CUDA, an ONNX Runtime graph on the CPU."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import mlx.core as mx
import numpy as np
from mlx_whisper.whisper import Whisper
from threadpoolctl import threadpool_limits

from watcherd.engine import cpu
from watcherd.engine.encoder_graph import EncoderGraph


class Stopped(Exception):
    """Encoding ahead was abandoned (the transcription ended early)."""


def encode(model: Whisper, mel: mx.array, check: Callable[[], None] | None = None) -> mx.array:
    """Encode a batch of mel windows (B, 3000, n_mels) into audio features (B, 1500, d).
    `check` runs between sub-batches and may raise to abandon the work (stop, cancel)."""
    if not cpu.use_cpu_path(model):
        features = model.encoder(mel)
        mx.eval(features)
        return features
    return mx.array(_encode_on_cpu(model, np.array(mel), check))


def _encode_on_cpu(model: Whisper, mel: np.ndarray, check: Callable[[], None] | None) -> np.ndarray:
    """A window at a time: the graph spreads each one over every core."""
    graph = cpu.shared(EncoderGraph, model)
    features = []
    for window in mel:
        if check is not None:
            check()
        features.append(graph.window(window))
    return np.stack(features)


class Ahead:
    """Encodes the next batch while the current one decodes, on the CPU path.

    The decoder's steps are bound by memory reads, the encoder by arithmetic: side by side
    they share the two cores better than in turn. While encoding runs ahead, the decoder's
    own BLAS products keep to one thread (the encoder's threads take the cores); a batch
    decoded with nothing encoding beside it (a short file, the last batch) gets every
    core again.
    Thread counts change only here, in the caller's thread, when no encoding runs. On
    Metal and CUDA `submit` encodes at once: MLX's GPU work is asynchronous already."""

    def __init__(self, model: Whisper):
        self.model = model
        self.pool: ThreadPoolExecutor | None = None
        self.stopped = threading.Event()
        self.blas: threadpool_limits | None = None
        self.running: Future | None = None

    def __enter__(self) -> Ahead:
        if cpu.use_cpu_path(self.model):
            self.pool = ThreadPoolExecutor(1, "encoder-ahead")
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self._all_cores()

    def _check(self) -> None:
        if self.stopped.is_set():
            raise Stopped

    def _all_cores(self) -> None:
        if self.blas is not None:
            self.blas.restore_original_limits()
            self.blas = None

    def submit(self, mel: mx.array) -> Callable[[], mx.array]:
        """Start encoding `mel`; returns a function that waits for the features."""
        if self.pool is None:
            features = encode(self.model, mel)
            return lambda: features
        mel = np.array(mel)  # MLX arrays are made and evaluated in this thread only
        if self.blas is None:
            self.blas = threadpool_limits(1, user_api="blas")
        self.running = self.pool.submit(_encode_on_cpu, self.model, mel, self._check)
        return lambda future=self.running: mx.array(future.result())

    def idle(self) -> None:
        """Say that nothing more is submitted for now: once the encoding in flight is done,
        BLAS may use every core for the decoding that follows."""
        if self.running is not None:
            self.running.result()
            self.running = None
        self._all_cores()
