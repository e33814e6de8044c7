"""The engine's result: plain values, free of MLX, that the output writers turn into files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float
    speaker: str | None = None  # who says it, once diarized ("Speaker 1"); None: not diarized


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    speaker: str | None = None  # who speaks, once diarized ("Speaker 1"); None: not diarized


@dataclass(frozen=True)
class Turn:
    """A stretch of time in which one speaker talks (turns of two speakers may overlap)."""

    start: float
    end: float
    speaker: int  # index into Transcript.speakers (the diarizer's own numbering before)


@dataclass(frozen=True)
class Transcript:
    source: str
    segments: tuple[Segment, ...]
    language: str
    model: str
    audio_seconds: float
    processing_seconds: float
    task: str = "transcribe"
    backend: str = ""
    language_probability: float | None = None  # None: set, not detected
    windows: int = 0  # windows decoded for it (a resumed file: since it resumed)
    # Diarized transcripts only: the speakers' labels ("Speaker 1", or a name), in order
    # of first appearance, and who spoke when.
    speakers: tuple[str, ...] = ()
    turns: tuple[Turn, ...] = ()

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.processing_seconds if self.processing_seconds else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["text"] = self.text
        return data


def segments_to_json(segments: tuple[Segment, ...] | list[Segment]) -> str:
    """Segments as JSON, every float as it is: what a checkpoint keeps."""
    return json.dumps([asdict(s) for s in segments])


def segments_from_json(text: str) -> tuple[Segment, ...]:
    return tuple(
        Segment(**{**s, "words": tuple(Word(**w) for w in s["words"])}) for s in json.loads(text)
    )
