"""From a file's settings to the parts that act on them: the engine that transcribes it,
the decode options it is transcribed with, and the layout of its subtitles.

The engine is imported only when one is asked for: it loads MLX, ONNX Runtime and PyAV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from watcherd.config import Profile, Settings
from watcherd.subtitles import Layout

if TYPE_CHECKING:
    from watcherd.engine import DecodeOptions, Engine


def engine_for(settings: Settings, model: str | None = None) -> Engine:
    from watcherd.engine import Engine

    return Engine(
        model or settings.model,
        settings.model_cache_dir,
        settings.dtype,
        vad=settings.vad,
        batch_size=settings.batch_size,
    )


def decode_options(profile: Profile) -> DecodeOptions:
    from watcherd.engine import DecodeOptions

    return DecodeOptions(
        language=profile.language,
        task=profile.task,
        initial_prompt=profile.initial_prompt,
        word_timestamps=profile.word_timestamps,
    )


def layout(profile: Profile) -> Layout:
    return Layout(
        max_line_chars=profile.subtitle_max_line_chars,
        max_lines=profile.subtitle_max_lines,
        max_cue_seconds=profile.subtitle_max_cue_seconds,
        highlight_words=profile.subtitle_highlight_words,
    )
