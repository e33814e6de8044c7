"""Decode any audio or video file to 16 kHz mono float32 in-process, with PyAV.

PyAV links FFmpeg's libraries, so no `ffmpeg` binary is needed on PATH (launchd's PATH
has no Homebrew). Decoding streams: callers may consume fixed-size blocks and never hold
more than one block plus the resampler's buffer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 16_000


class AudioError(RuntimeError):
    """A file that cannot be decoded; the message names the file and the cause."""

    def __init__(self, path: Path | str, cause: str):
        super().__init__(f"{path}: {cause}")
        self.path = str(path)
        self.cause = cause


def _open(path: Path) -> av.container.InputContainer:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AudioError(
            path, "file not found (deleted or moved before it was transcribed)"
        ) from None
    except PermissionError:
        raise AudioError(path, "permission denied reading the file") from None
    if size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except PermissionError:
        raise AudioError(path, "permission denied reading the file") from None
    except av.error.FFmpegError as exc:
        raise AudioError(path, f"not a readable audio or video file ({_reason(exc)})") from exc


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def declared_seconds(container: av.container.InputContainer) -> float | None:
    if container.duration:
        return container.duration / av.time_base
    return None


def stream_audio(path: Path | str, block_samples: int = 30 * SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Yield consecutive blocks of 16 kHz mono float32 samples (the last may be shorter)."""
    path = Path(path)
    with _open(path) as container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise AudioError(path, "has no audio stream")
        stream.thread_type = "AUTO"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        pending: list[np.ndarray] = []
        pending_samples = 0
        decoded = 0
        try:
            for frame in _frames(container, stream, resampler):
                samples = frame.to_ndarray().reshape(-1)
                pending.append(samples)
                pending_samples += samples.size
                while pending_samples >= block_samples:
                    buffer = np.concatenate(pending)
                    yield buffer[:block_samples]
                    decoded += block_samples
                    pending = [buffer[block_samples:]]
                    pending_samples = pending[0].size
        except av.error.FFmpegError as exc:
            raise AudioError(path, f"corrupt or truncated audio ({_reason(exc)})") from exc
        if pending_samples:
            decoded += pending_samples
            yield np.concatenate(pending)
        if decoded == 0:
            raise AudioError(path, "contains no decodable audio")


def _frames(container, stream, resampler) -> Iterator[av.AudioFrame]:
    for frame in container.decode(stream):
        yield from resampler.resample(frame)
    yield from resampler.resample(None)


def load_audio(path: Path | str) -> np.ndarray:
    """The whole file as one array; fine for clips, use `stream_audio` for long files."""
    return np.concatenate(list(stream_audio(path)))


def probe_seconds(path: Path | str) -> float | None:
    """The duration the container declares, without decoding."""
    with _open(Path(path)) as container:
        return declared_seconds(container)
