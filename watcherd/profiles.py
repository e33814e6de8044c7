"""From a file's settings to the parts that act on them: the engine that transcribes it,
the decode options it is transcribed with, the layout of its outputs and where they go.

The engine is imported only when one is asked for: it loads MLX, ONNX Runtime and PyAV.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from watcherd import languages
from watcherd.config import Profile, Settings
from watcherd.outputs import Placement, Style
from watcherd.subtitles import Layout

if TYPE_CHECKING:
    from watcherd.engine import DecodeOptions, Engine
    from watcherd.transcript import Transcript


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


def style(profile: Profile) -> Style:
    return Style(
        subtitles=layout(profile),
        txt_layout=profile.txt_layout,
        md_timestamps=profile.md_timestamps,
    )


def placement(profile: Profile, transcript: Transcript) -> Placement:
    """Subtitle names carry the language of their text: English for a translation."""
    tag = None
    if profile.subtitle_names in languages.STYLES:
        spoken = "en" if transcript.task == "translate" else transcript.language
        tag = languages.tag(spoken, profile.subtitle_names)
    folders = {"md": profile.md_dir} if profile.md_dir else {}
    return Placement(subtitle_language=tag, folders=folders)


def md_folder(profile: Profile) -> Path | None:
    """The folder Markdown transcripts go to instead of beside the source (a notes vault)."""
    return profile.md_dir if profile.md_dir and "md" in profile.formats else None
