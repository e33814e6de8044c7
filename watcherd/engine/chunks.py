"""Cut a stream of audio into chunks of at most 30 s, where no word is split.

With VAD (silero, through onnxruntime): find the speech, cut speech regions longer than
30 s at their least speech-like frame, and merge neighbours while the merged span stays
within 30 s (the WhisperX "cut & merge" method). Silence between chunks is skipped.

Without VAD: tiles of at most 30 s that cover everything, each cut at the quietest
100 ms of its last 10 s, so a boundary falls in a pause rather than inside a word.

Both read the audio in bounded blocks and yield chunks as soon as they are final, so
memory does not grow with the length of the file.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
MAX_CHUNK = 30 * SAMPLE_RATE
VAD_FRAME = 512  # samples per silero frame (32 ms)
VAD_CONTEXT = 64


@dataclass(frozen=True)
class Chunk:
    start: int  # sample offset in the file
    samples: np.ndarray
    second_pass: bool = False  # a stretch the first decode of its chunk skipped

    @property
    def start_seconds(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return self.samples.size / SAMPLE_RATE


class _Buffer:
    """The not-yet-chunked tail of the stream, with its offset in the file."""

    def __init__(self) -> None:
        self.start = 0
        self.data = np.zeros(0, np.float32)

    @property
    def end(self) -> int:
        return self.start + self.data.size

    def append(self, block: np.ndarray) -> None:
        self.data = np.concatenate([self.data, block]) if self.data.size else block

    def take(self, start: int, end: int) -> np.ndarray:
        return self.data[start - self.start : end - self.start]

    def drop_before(self, position: int) -> None:
        cut = max(0, position - self.start)
        self.data = self.data[cut:]
        self.start += cut


# --- without VAD ---------------------------------------------------------------------------


def tiles(blocks: Iterable[np.ndarray], search_seconds: float = 10.0) -> Iterator[Chunk]:
    """Cover the whole stream with chunks of at most 30 s, cut at quiet points."""
    buffer = _Buffer()
    window = int(search_seconds * SAMPLE_RATE)
    step = SAMPLE_RATE // 10
    for block in blocks:
        buffer.append(block)
        while buffer.data.size > MAX_CHUNK:
            tail = buffer.data[MAX_CHUNK - window : MAX_CHUNK]
            energy = (tail[: tail.size // step * step].reshape(-1, step) ** 2).mean(axis=1)
            cut = buffer.start + MAX_CHUNK - window + int(np.argmin(energy)) * step + step // 2
            yield Chunk(buffer.start, buffer.take(buffer.start, cut).copy())
            buffer.drop_before(cut)
    if buffer.data.size:
        yield Chunk(buffer.start, buffer.data)


# --- with VAD ----------------------------------------------------------------------------


def model_path() -> Path:
    """The silero-vad package's sequence model, found without importing the package (its
    __init__ imports torch, which would cost ~300 MB of memory for nothing)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the silero-vad package is not installed (pip install silero-vad)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder / "silero_vad_16k_sequence.onnx"


class SileroVAD:
    """Speech probability per 32 ms frame, streaming (its state carries across calls).

    Silero's sequence export runs a whole block of frames per call, with the LSTM inside
    ONNX Runtime: the same probabilities, bit for bit, as the frame-by-frame model, at a
    third of its time (a Python call per 32 ms frame was ~0.17 ms, 3 s per 9 minutes)."""

    def __init__(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(model_path()), options, providers=["CPUExecutionProvider"]
        )
        self.reset()

    def reset(self) -> None:
        self.hidden = np.zeros((1, 1, 128), np.float32)
        self.cell = np.zeros((1, 1, 128), np.float32)
        self.context = np.zeros(VAD_CONTEXT, np.float32)  # the previous frame's tail

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities for whole frames of `samples` (its length must be a frame multiple)."""
        frames = samples.reshape(-1, VAD_FRAME)
        if not len(frames):
            return np.zeros(0, np.float32)
        # Each frame goes in with the last VAD_CONTEXT samples before it.
        contexts = np.concatenate([self.context[None], frames[:-1, -VAD_CONTEXT:]])
        probs, self.hidden, self.cell = self.session.run(
            None,
            {"input": np.concatenate([contexts, frames], axis=1), "h": self.hidden,
             "c": self.cell},
        )  # fmt: skip
        self.context = frames[-1, -VAD_CONTEXT:].copy()
        return probs.astype(np.float32).reshape(-1)


@dataclass
class VadOptions:
    threshold: float = 0.5  # a frame above this starts speech
    neg_threshold: float = 0.35  # speech ends when frames fall below this
    min_speech_seconds: float = 0.25
    min_silence_seconds: float = 0.5  # shorter pauses do not end a region
    pad_seconds: float = 0.4  # kept around each region, so word edges are not clipped


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


def split_long(
    region: tuple[int, int], probs: np.ndarray, max_frames: int
) -> list[tuple[int, int]]:
    """Cut a region longer than max_frames at its least speech-like frame, recursively."""
    start, end = region
    if end - start <= max_frames:
        return [region]
    lo, hi = start + max_frames // 2, start + max_frames
    cut = lo + int(np.argmin(probs[lo:hi]))
    return [(start, cut), *split_long((cut, end), probs, max_frames)]


def merge(spans: list[tuple[int, int]], max_len: int) -> list[tuple[int, int]]:
    """Join neighbours while the span from the first start to the last end fits; where
    padded neighbours that stay apart overlap, split the overlap between them."""
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and end - merged[-1][0] <= max_len:
            merged[-1] = (merged[-1][0], end)
        elif merged and start < merged[-1][1]:
            middle = (start + merged[-1][1]) // 2
            merged[-1] = (merged[-1][0], middle)
            merged.append((middle, end))
        else:
            merged.append((start, end))
    return merged


def speech_chunks(
    blocks: Iterable[np.ndarray],
    options: VadOptions | None = None,
    vad: SileroVAD | None = None,
) -> Iterator[Chunk]:
    """Chunks of at most 30 s holding the speech of the stream."""
    options = options or VadOptions()
    vad = vad or SileroVAD()
    vad.reset()
    buffer = _Buffer()  # samples from buffer.start on, whole VAD frames only
    probs = np.zeros(0, np.float32)  # one per frame of the buffer
    pending = np.zeros(0, np.float32)  # samples short of a whole frame
    pad = int(options.pad_seconds * SAMPLE_RATE)
    longest = (MAX_CHUNK - 2 * pad) // VAD_FRAME

    def spans() -> list[tuple[int, int]]:
        """Padded, merged speech spans, in samples relative to the buffer."""
        regions = [piece for region in speech_regions(probs, options)
                   for piece in split_long(region, probs, longest)]  # fmt: skip
        padded = [(max(0, s * VAD_FRAME - pad), e * VAD_FRAME + pad) for s, e in regions]
        return merge(padded, MAX_CHUNK)

    def emit(final: list[tuple[int, int]]) -> Iterator[Chunk]:
        for start, end in final:
            yield Chunk(
                buffer.start + start, buffer.data[start : min(end, buffer.data.size)].copy()
            )

    for block in blocks:
        data = np.concatenate([pending, block]) if pending.size else block
        whole = data.size // VAD_FRAME * VAD_FRAME
        pending = data[whole:]
        buffer.append(data[:whole])
        probs = np.concatenate([probs, vad.probabilities(data[:whole])])
        if buffer.data.size < 2 * MAX_CHUNK:
            continue
        # A span that starts this far back can no longer grow or merge with later speech.
        horizon = buffer.data.size - MAX_CHUNK - pad
        all_spans = spans()
        final = [s for s in all_spans if s[0] < horizon]
        yield from emit(final)
        later = [s for s in all_spans if s[0] >= horizon]
        keep = later[0][0] if later else max(final[-1][1] if final else 0, horizon)
        keep = min(keep, buffer.data.size) // VAD_FRAME * VAD_FRAME
        buffer.drop_before(buffer.start + keep)
        probs = probs[keep // VAD_FRAME :]
    if pending.size:  # the last partial frame counts as speech only if its neighbour does
        buffer.append(pending)
        probs = np.append(probs, probs[-1] if probs.size else 0.0)
    yield from emit(spans())
