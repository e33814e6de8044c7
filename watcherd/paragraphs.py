"""Readable paragraphs from a transcript's segments, for Markdown and `txt_layout =
"paragraphs"`.

Whisper's segments are a few seconds each, cut where its 30 s windows and timestamps fell,
not where the speaker's thought ends. A paragraph here ends where people hear one end:

- at a sentence's end followed by a pause of `PAUSE_SECONDS` or more, once it holds
  `MIN_SECONDS` of speech (a list of short sentences read one by one stays together);
- at the first sentence end after `LONG_SECONDS` of speech, so that a talk without pauses
  still reads in paragraphs;
- anywhere after a silence of `LONG_PAUSE_SECONDS`, or after `MAX_SECONDS` without a
  sentence end (text without punctuation);
- where another speaker starts (diarized transcripts).

Pauses are measured between words where the transcript has word timestamps; otherwise
between segments, whose times often take in the pause after them (measured on the read
Harvard sentences: segment times touch where the words leave 0.5–1.4 s between sentences).

Segments are never cut inside: a paragraph holds whole segments, so its words are exactly
the segments' words, in order.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from watcherd.subtitles import CLOSING, SENTENCE_END, is_cjk
from watcherd.transcript import Segment

PAUSE_SECONDS = 1.0
MIN_SECONDS = 15.0
LONG_SECONDS = 40.0
LONG_PAUSE_SECONDS = 3.0
MAX_SECONDS = 90.0


@dataclass(frozen=True)
class Paragraph:
    start: float
    end: float
    text: str
    speaker: str | None = None


def paragraphs(segments: Iterable[Segment]) -> list[Paragraph]:
    found: list[Paragraph] = []
    current: list[Segment] = []
    for segment in segments:
        if not segment.text.strip():
            continue
        if current and _ends_paragraph(current, segment):
            found.append(_paragraph(current))
            current = []
        current.append(segment)
    if current:
        found.append(_paragraph(current))
    return found


def _ends_paragraph(current: list[Segment], following: Segment) -> bool:
    last = current[-1]
    pause = _start(following) - _end(last)
    spoken = _end(last) - _start(current[0])
    if following.speaker != last.speaker or pause >= LONG_PAUSE_SECONDS or spoken >= MAX_SECONDS:
        return True
    if not _ends_sentence(last.text):
        return False
    return (pause >= PAUSE_SECONDS and spoken >= MIN_SECONDS) or spoken >= LONG_SECONDS


def _start(segment: Segment) -> float:
    return segment.words[0].start if segment.words else segment.start


def _end(segment: Segment) -> float:
    return segment.words[-1].end if segment.words else segment.end


def _ends_sentence(text: str) -> bool:
    text = text.strip().rstrip(CLOSING)
    return bool(text) and text[-1] in SENTENCE_END


def _joined_without_space(before: str, after: str) -> bool:
    """Chinese and Japanese are written without spaces between sentences too (after a
    character or their full-width punctuation: "。", "！")."""
    wide_mark = unicodedata.east_asian_width(before) in "WF" and not before.isalnum()
    return is_cjk(after) and (is_cjk(before) or wide_mark)


def _paragraph(segments: list[Segment]) -> Paragraph:
    text = ""
    for segment in segments:
        piece = segment.text.strip()
        if text and not _joined_without_space(text[-1], piece[0]):
            text += " "
        text += piece
    return Paragraph(segments[0].start, segments[-1].end, text, segments[0].speaker)
