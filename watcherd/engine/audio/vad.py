"""Voice activity: silero's speech probability per 32 ms frame, and the speech regions.

silero runs with onnxruntime from the model files its package ships; the package itself
is never imported (its `__init__` imports torch, hundreds of MB for nothing).
"""

from __future__ import annotations

import importlib.util
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from watcherd.engine.audio.decode import SAMPLE_RATE

VAD_FRAME = 512  # samples per silero frame (32 ms)
VAD_CONTEXT = 64


def model_path() -> Path:
    """The silero-vad package's sequence model, found without importing the package (its
    __init__ imports torch, hundreds of MB of memory for nothing)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the silero-vad package is not installed (pip install silero-vad)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder / "silero_vad_16k_sequence.onnx"


SEGMENT = 1875 * VAD_FRAME  # 60 s, the unit of work: a segment's probabilities are its own
WARMUP = 64 * VAD_FRAME  # 2 s before a segment, that its model state is warmed up on


class SileroVAD:
    """Speech probability per 32 ms frame.

    Silero's sequence export runs a whole block of frames per call, with the LSTM inside
    ONNX Runtime, without a Python call per 32 ms frame. A stream is taken in segments of
    SEGMENT samples at fixed places, each from a fresh state warmed up on the WARMUP
    samples before it: a segment's probabilities then depend on nothing else, so however
    the stream is read, and however many segments run at once (ONNX Runtime sessions run
    in parallel threads), the probabilities, and so the chunks, are the same."""

    def __init__(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(model_path()), options, providers=["CPUExecutionProvider"]
        )

    def probabilities(self, samples: np.ndarray, before: np.ndarray | None = None) -> np.ndarray:
        """Probabilities for the whole frames of `samples` (a frame multiple), from a fresh
        state warmed up on `before` (a frame multiple too), whose own are dropped."""
        before = np.zeros(0, np.float32) if before is None else before
        frames = np.concatenate([before, samples]).reshape(-1, VAD_FRAME)
        if not len(frames):
            return np.zeros(0, np.float32)
        # Each frame goes in with the last VAD_CONTEXT samples before it.
        contexts = np.concatenate(
            [np.zeros((1, VAD_CONTEXT), np.float32), frames[:-1, -VAD_CONTEXT:]]
        )
        state = np.zeros((1, 1, 128), np.float32)
        probs, _, _ = self.session.run(
            None,
            {"input": np.concatenate([contexts, frames], axis=1), "h": state, "c": state},
        )
        return probs.astype(np.float32).reshape(-1)[before.size // VAD_FRAME :]


@dataclass
class VadOptions:
    threshold: float = 0.5  # a frame above this starts speech
    neg_threshold: float = 0.35  # speech ends when frames fall below this
    min_speech_seconds: float = 0.25
    min_silence_seconds: float = 0.5  # shorter pauses do not end a region
    # Kept around each region, so that no word edge is clipped and Whisper hears each
    # chunk begin and end in a pause, as its training windows did: measured on the
    # development sets, 1 s lost fewer words than 0.4 s (README, "Chunking").
    pad_seconds: float = 1.0
    # A longer pause between padded regions ends a chunk: bridged, a long pause carries
    # what a headset or a room picks up between the speaker's turns into the window.
    max_gap_seconds: float | None = 3.0


def speech_regions(probs: np.ndarray, options: VadOptions) -> list[tuple[int, int]]:
    """(start_frame, end_frame) of each speech region, before padding."""
    regions: list[tuple[int, int]] = []
    min_silence = int(options.min_silence_seconds * SAMPLE_RATE / VAD_FRAME)
    start, silent = None, 0
    for i, p in enumerate(probs):
        if start is None:
            if p >= options.threshold:
                start, silent = i, 0
        elif p < options.neg_threshold:
            silent += 1
            if silent > min_silence:
                regions.append((start, i - silent + 1))
                start = None
        else:
            silent = 0
    if start is not None:
        regions.append((start, len(probs) - silent))
    min_frames = options.min_speech_seconds * SAMPLE_RATE / VAD_FRAME
    return [(s, e) for s, e in regions if e - s >= min_frames]


def speech_probabilities(
    blocks: Iterable[np.ndarray], vad: SileroVAD | None = None, workers: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The stream in segments of SEGMENT samples (the last one shorter), each with the
    speech probability of every frame it holds (a last partial frame counts as the frame
    before it). With `workers`, the segments ahead are computed in that many threads
    while the caller works on the ones before: on a machine with cores to spare, the VAD
    is then off the critical path."""
    vad = vad or SileroVAD()
    pool = ThreadPoolExecutor(workers, "vad") if workers else None
    pending: deque[tuple[np.ndarray, Future | np.ndarray]] = deque()

    def start(segment: np.ndarray, before: np.ndarray) -> None:
        whole = segment[: segment.size // VAD_FRAME * VAD_FRAME]
        work = pool.submit(vad.probabilities, whole, before) if pool else None
        pending.append((segment, work if pool else vad.probabilities(whole, before)))

    def finished() -> tuple[np.ndarray, np.ndarray]:
        segment, work = pending.popleft()
        probs = work.result() if isinstance(work, Future) else work
        if segment.size % VAD_FRAME:
            probs = np.append(probs, probs[-1] if probs.size else 0.0)
        return segment, probs

    try:
        buffer, before = np.zeros(0, np.float32), np.zeros(0, np.float32)
        for block in blocks:
            buffer = np.concatenate([buffer, block]) if buffer.size else block
            while buffer.size >= SEGMENT:
                segment, buffer = buffer[:SEGMENT], buffer[SEGMENT:]
                start(segment, before)
                before = segment[-WARMUP:]
                while len(pending) > workers:
                    yield finished()
        if buffer.size:
            start(buffer, before)
        while pending:
            yield finished()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
