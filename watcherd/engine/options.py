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
    # When even the fallback's best text is improbable, this much no-speech suffices:
    # what is left then is invented ("you", "Hmm." for music at P(no speech) ~ 0.35-0.6).
    fallback_no_speech_threshold: float | None = 0.3
    # Whisper's own rule keeps any text with avg logprob above -1, whatever the no-speech
    # probability. Its inventions on silence and noise ("you" at 0.95 / -0.70, "Thank you
    # for watching." at 0.71 / -0.76, "Mmm." at 0.56 / -0.97) are rows the model doubts
    # are speech with text it is not sure of; real speech scores no-speech <= 0.2 here.
    doubt_no_speech_threshold: float | None = 0.5
    doubt_logprob_threshold: float | None = -0.5
