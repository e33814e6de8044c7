"""Decode any audio or video file to 16 kHz mono float32 in-process, with PyAV.

PyAV links FFmpeg's libraries, so no `ffmpeg` binary is needed on PATH (launchd's PATH
has no Homebrew). Decoding streams: callers may consume fixed-size blocks and never hold
more than one block plus the resampler's buffer.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 16_000


# Tags are never read here, so their encoding must not matter. PyAV 19 reads them as UTF-8
# with surrogateescape and dropped the option; earlier versions refuse to open a file with
# Latin-1 tags unless told to ignore decoding errors.
OPEN_OPTIONS = {} if int(av.__version__.split(".")[0]) >= 19 else {"metadata_errors": "ignore"}
TRUNCATED_SHARE = 0.9  # decoding less than this share of the declared length...
TRUNCATED_SECONDS = 1.0  # ...and at least this much less means the file was cut short


class AudioError(RuntimeError):
    """A file that cannot be decoded; the message names the file and the cause.
    `transient` errors (permissions, I/O) may pass: the job is retried later."""

    def __init__(self, path: Path | str, cause: str, *, transient: bool = False):
        super().__init__(f"{path}: {cause}")
        self.path = str(path)
        self.cause = cause
        self.transient = transient


def _open(path: Path) -> av.container.InputContainer:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AudioError(
            path, "file not found (deleted or moved before it was transcribed)"
        ) from None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        return av.open(str(path), **OPEN_OPTIONS)
    except FileNotFoundError:
        raise AudioError(path, "file not found (deleted or moved while queued)") from None
    except OSError as exc:  # PyAV's PermissionError and friends are OSErrors too
        if not isinstance(exc, av.error.FFmpegError) or exc.errno in TRANSIENT_ERRNOS:
            raise _unreadable(path, exc) from None
        raise AudioError(path, f"not a readable audio or video file ({_reason(exc)})") from exc
    except av.error.FFmpegError as exc:
        raise AudioError(path, f"not a readable audio or video file ({_reason(exc)})") from exc


TRANSIENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EIO, errno.EAGAIN, errno.EBUSY}


def _unreadable(path: Path, exc: OSError) -> AudioError:
    """Reading failed for a reason that may pass (permissions, a flaky disk)."""
    return AudioError(path, f"cannot read the file ({_reason(exc)})", transient=True)


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def declared_seconds(container: av.container.InputContainer) -> float | None:
    if container.duration:
        return container.duration / av.time_base
    return None


def _trusted_length(path: Path, container, stream) -> float | None:
    """The audio length the file's header states, when it states one. Raw MP3 and ADTS
    have no length field: FFmpeg guesses one from the bitrate, which a cut file shares
    and which VBR files miss by far, so those count only with a Xing/Info/VBRI header."""
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    else:
        seconds = declared_seconds(container)
    if not seconds:
        return None
    name = container.format.name
    if name == "wav":  # FFmpeg trusts the file's size over the header; read the header
        return _wav_data_seconds(path)
    if name == "aac" or (name == "mp3" and not _has_vbr_header(path)):
        return None
    return seconds


def _wav_data_seconds(path: Path) -> float | None:
    """The length a RIFF/WAVE header declares: the data chunk's size over the byte rate."""
    with path.open("rb") as f:
        if f.read(12)[8:12] != b"WAVE":
            return None
        byte_rate = None
        while len(header := f.read(8)) == 8:
            size = int.from_bytes(header[4:], "little")
            if header[:4] == b"fmt ":
                byte_rate = int.from_bytes(f.read(16)[8:12], "little")
                f.seek(size - 16 + size % 2, 1)
            elif header[:4] == b"data":
                streaming = size in (0, 0xFFFFFFFF)  # written live: no length yet
                return None if streaming or not byte_rate else size / byte_rate
            else:
                f.seek(size + size % 2, 1)
    return None


def _has_vbr_header(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(10)
        skip = 0
        if head[:3] == b"ID3" and len(head) == 10:  # synchsafe tag size
            skip = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))
        f.seek(skip)
        frame = f.read(4096)
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))


def stream_audio(path: Path | str, block_samples: int = 30 * SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Yield consecutive blocks of 16 kHz mono float32 samples (the last may be shorter)."""
    path = Path(path)
    with _open(path) as container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise AudioError(path, "has no audio stream")
        stream.thread_type = "AUTO"
        # Output in whole seconds: a WAV's packets hold ~1000 samples, and a NumPy array
        # and a Python iteration per packet would double the decoding time; the samples
        # are the same.
        resampler = av.AudioResampler(
            format="flt", layout="mono", rate=SAMPLE_RATE, frame_size=SAMPLE_RATE
        )
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
            # Older FFmpeg builds stop a cut-off FLAC with an error where newer ones end the
            # stream: either way, a file shorter than its header says is named as truncated.
            if truncated := _truncated(path, container, stream, decoded + pending_samples):
                raise truncated from exc
            raise AudioError(path, f"corrupt or truncated audio ({_reason(exc)})") from exc
        if pending_samples:
            decoded += pending_samples
            yield np.concatenate(pending)
        if decoded == 0:
            raise AudioError(path, "contains no decodable audio")
        if truncated := _truncated(path, container, stream, decoded):
            raise truncated


def _truncated(path: Path, container, stream, decoded: int) -> AudioError | None:
    """The error for a file that decodes to clearly less than its header declares."""
    expected = _trusted_length(path, container, stream)
    got = decoded / SAMPLE_RATE
    if expected and got < expected * TRUNCATED_SHARE and expected - got > TRUNCATED_SECONDS:
        return AudioError(
            path, f"truncated: only {got:.1f} s of the {expected:.1f} s its header declares"
        )
    return None


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


def _serve(path: str) -> int:
    """`python decode.py PATH`: the file's samples as raw float32 on stdout; an error as
    one line `transient<TAB>cause` on stderr, exit status 3 (see `audio/child.py`)."""
    import sys

    try:
        for block in stream_audio(path, SAMPLE_RATE * 10):
            sys.stdout.buffer.write(block.data)
    except AudioError as exc:
        sys.stderr.write(f"{int(exc.transient)}\t{exc.cause}\n")
        return 3
    except BrokenPipeError:  # the reader stopped (a cancelled file)
        return 0
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_serve(sys.argv[1]))
