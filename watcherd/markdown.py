"""Markdown transcripts for notes apps (Obsidian and the like): YAML front matter, then the
transcript in readable paragraphs (`paragraphs.py`), each optionally after its start time.

    ---
    title: interview
    source: /Users/me/Transcribe/inbox/interview.m4a
    date: 2026-11-30
    duration: 00:42:17
    language: en
    model: tiny.en
    ---

    [00:00:00] So, tell me how it started.

The front matter is written by PyYAML, which quotes what YAML would misread (a title with
a colon, `#` or a leading dash; a duration YAML 1.1 would read as a number). The text is
escaped so that Markdown shows it as spoken: `*`, `_`, `#`, `[`, `$` (Obsidian's maths)
and the like are backslash-escaped, and a paragraph that starts like a list item does not
become one.
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

import yaml

from watcherd.paragraphs import Paragraph, paragraphs
from watcherd.transcript import Transcript

# Every character that starts or ends Markdown syntax inside a line, in CommonMark and in
# Obsidian (`$` maths, `~~`, `|` tables, `#tags`), and HTML's `<`, `>`.
_INLINE = re.compile(r"([\\`*_\[\]<>#|~$])")
# `==highlight==` and `%%comment%%` in Obsidian: escape the first character of the pair.
_PAIRS = re.compile(r"(=)(?==)|(%)(?=%)")
# What makes a paragraph's start a list item or a heading: "1. ", "1) ", "- ", "+ ".
_BLOCK_START = re.compile(r"^(\d+)([.)])(?=\s|$)|^([-+])(?=\s|$)")


def render(transcript: Transcript, timestamps: bool = False) -> str:
    front = yaml.safe_dump(
        front_matter(transcript), sort_keys=False, allow_unicode=True, width=1_000_000
    )
    body = "\n\n".join(_paragraph(p, timestamps) for p in paragraphs(transcript.segments))
    return f"---\n{front}---\n" + (f"\n{body}\n" if body else "")


def front_matter(transcript: Transcript) -> dict:
    source = Path(os.path.abspath(transcript.source))
    data: dict = {
        "title": source.stem,
        "source": str(source),
        "date": _recorded(source),
        "duration": clock(transcript.audio_seconds),
        "language": transcript.language,
        "model": transcript.model,
    }
    if transcript.task == "translate":  # the text is English; say what it was
        data["language"], data["translated_from"] = "en", transcript.language
    speakers = list(dict.fromkeys(s.speaker for s in transcript.segments if s.speaker))
    if speakers:
        data["speakers"] = speakers
    return data


def clock(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def escape(text: str) -> str:
    text = _PAIRS.sub(lambda m: "\\" + (m.group(1) or m.group(2)), _INLINE.sub(r"\\\1", text))
    return _BLOCK_START.sub(lambda m: f"{m[1]}\\{m[2]}" if m[1] else f"\\{m[3]}", text)


def _recorded(source: Path) -> datetime.date:
    """The day the source was last written, usually the day it was recorded (copies made
    by Finder, AirDrop or `cp -p` keep it); today when it cannot be read."""
    try:
        return datetime.date.fromtimestamp(source.stat().st_mtime)
    except OSError:
        return datetime.date.today()


def _paragraph(paragraph: Paragraph, timestamps: bool) -> str:
    text = escape(paragraph.text)
    if paragraph.speaker:
        text = f"**{escape(paragraph.speaker)}:** {text}"
    if timestamps:
        text = f"[{clock(paragraph.start)}] {text}"
    return text
