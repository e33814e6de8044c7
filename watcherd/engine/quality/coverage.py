"""No words lost inside a window: what a row skipped, or would skip by ending early.

Each window is decoded without the previous window's text as context (that is what
lets windows run side by side). Without it Whisper sometimes jumps over a sentence, or
ends early: it ends JFK's speech after "...for your country." even when more speech
follows, as its training clip did. Sequential Whisper would seek back; here a row that
has spoken is held to the rest of its window (`hold`), and what is still skipped is
decoded once more in a window of its own (`settle`).
"""

from __future__ import annotations

import numpy as np

from watcherd.engine.audio.chunks import Chunk
from watcherd.engine.audio.decode import SAMPLE_RATE
from watcherd.engine.decoding.rules import TIME_PRECISION
from watcherd.transcript import Segment

GAP_SECONDS = 2.0  # skipped audio worth a second decode
GAP_MIN_RMS = 0.01  # about -40 dBFS: quieter stretches are silence
AUDIBLE_RMS = 0.001  # -60 dBFS: a chunk with nothing louder is not decoded at all
LEVEL_SECONDS = 0.1  # levels are measured per 100 ms
LEVEL_FRAME = 1600  # samples in LEVEL_SECONDS


def frame_rms(samples: np.ndarray) -> np.ndarray:
    """RMS level of each whole 100 ms of the samples."""
    frames = samples[: samples.size // LEVEL_FRAME * LEVEL_FRAME].reshape(-1, LEVEL_FRAME)
    return np.sqrt((frames**2).mean(axis=1))


def _peak_rms(samples: np.ndarray) -> float:
    levels = frame_rms(samples)
    return float(levels.max()) if levels.size else 0.0


def audible(samples: np.ndarray) -> bool:
    """Whether any 100 ms rises above digital silence (-60 dBFS)."""
    return _peak_rms(samples) >= AUDIBLE_RMS


def loud(samples: np.ndarray) -> bool:
    """Whether any 100 ms of these samples is above the silence level."""
    return _peak_rms(samples) >= GAP_MIN_RMS


def hold(chunk: Chunk) -> int:
    """The timestamp (in steps of TIME_PRECISION into the chunk) before which its row may
    not end once it has spoken: ending there would leave GAP_SECONDS or more of loud
    audio, which `skipped` would decode again in a window of its own."""
    if chunk.second_pass:
        return 0
    levels = np.flatnonzero(frame_rms(chunk.samples) >= GAP_MIN_RMS)
    if not levels.size:
        return 0
    until = min(chunk.seconds - GAP_SECONDS, levels[-1] * LEVEL_SECONDS)
    return max(0, int(until / TIME_PRECISION))


def skipped(chunk: Chunk, parsed: list[Segment]) -> list[Chunk]:
    """Stretches of a chunk the decode skipped: gaps of GAP_SECONDS or more between its
    segments, or after the last complete one, that are not silent. Decoded again once."""
    if chunk.second_pass:
        return []
    spans, covered = [], 0.0
    for segment in parsed:
        begin = segment.start - chunk.start_seconds
        spans.append((covered, begin))
        covered = max(covered, segment.end - chunk.start_seconds)
    spans.append((covered, chunk.seconds))
    gaps = []
    for begin, end in spans:
        samples = chunk.samples[int(begin * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        if end - begin >= GAP_SECONDS and loud(samples):
            gaps.append(Chunk(chunk.start + int(begin * SAMPLE_RATE), samples, True))
    return gaps


def settle(
    chunk: Chunk, parsed: list[Segment], complete: float
) -> tuple[list[Segment], list[Chunk]]:
    """The segments to keep from a row, and the stretches to decode again. A trailing
    segment with no closing timestamp is dropped only when its audio is decoded again."""
    closed = [p for p in parsed if p.end <= chunk.start_seconds + complete]
    again = skipped(chunk, closed)
    if len(closed) == len(parsed):
        return parsed, again
    tail_start = chunk.start_seconds + complete - 0.01
    if any(g.start_seconds >= tail_start for g in again):
        return closed, again
    return parsed, skipped(chunk, parsed)
