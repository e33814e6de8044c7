"""What a caller may ask of the engine for one file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecodeOptions:
    language: str | None = None  # None: detect per file (multilingual models)
    task: str = "transcribe"  # or "translate" (to English)
    initial_prompt: str | None = None
    word_timestamps: bool = False
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
