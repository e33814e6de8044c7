"""Cut a stream of audio into chunks of at most 30 s, where no word is split.

With VAD (`vad`): find the speech, cut speech regions longer than 30 s at their least
speech-like frame, and merge neighbours while the merged span stays within 30 s (the
WhisperX "cut & merge" method). Silence between chunks is skipped.

Without VAD: tiles of at most 30 s that cover everything, each cut at the quietest
100 ms of its last 10 s, so a boundary falls in a pause rather than inside a word.

Both read the audio in bounded blocks and yield chunks as soon as they are final, so
memory does not grow with the length of the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from watcherd.engine.audio.decode import SAMPLE_RATE
from watcherd.engine.audio.vad import (
    VAD_FRAME,
    SileroVAD,
    VadOptions,
    speech_probabilities,
    speech_regions,
)

MAX_CHUNK = 30 * SAMPLE_RATE


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


def merge(
    spans: list[tuple[int, int]], max_len: int, max_gap: int | None = None
) -> list[tuple[int, int]]:
    """Join neighbours while the span from the first start to the last end fits and the
    pause between them is at most `max_gap`; where padded neighbours that stay apart
    overlap, split the overlap between them."""
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        near = max_gap is None or (merged and start - merged[-1][1] <= max_gap)
        if merged and end - merged[-1][0] <= max_len and near:
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
    workers: int = 0,
) -> Iterator[Chunk]:
    """Chunks of at most 30 s holding the speech of the stream; `workers`: threads for
    the VAD of the segments ahead (`vad.speech_probabilities`)."""
    options = options or VadOptions()
    buffer = _Buffer()  # samples from buffer.start on
    probs = np.zeros(0, np.float32)  # one per frame of the buffer
    pad = int(options.pad_seconds * SAMPLE_RATE)
    gap = None if options.max_gap_seconds is None else int(options.max_gap_seconds * SAMPLE_RATE)
    longest = (MAX_CHUNK - 2 * pad) // VAD_FRAME

    def spans() -> list[tuple[int, int]]:
        """Padded, merged speech spans, in samples relative to the buffer."""
        regions = [piece for region in speech_regions(probs, options)
                   for piece in split_long(region, probs, longest)]  # fmt: skip
        padded = [(max(0, s * VAD_FRAME - pad), e * VAD_FRAME + pad) for s, e in regions]
        return merge(padded, MAX_CHUNK, gap)

    def emit(final: list[tuple[int, int]]) -> Iterator[Chunk]:
        for start, end in final:
            yield Chunk(
                buffer.start + start, buffer.data[start : min(end, buffer.data.size)].copy()
            )

    for segment, segment_probs in speech_probabilities(blocks, vad, workers):
        buffer.append(segment)
        probs = np.concatenate([probs, segment_probs])
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
    yield from emit(spans())
