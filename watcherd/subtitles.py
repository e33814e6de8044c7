"""Subtitle cues that follow common (Netflix/BBC-style) conventions.

`cues(segments, layout)` turns transcript segments into cues of at most `max_lines` lines of
at most `max_line_chars` characters and, by default, no longer than 7 s:

- Text breaks only at spaces, and between the characters of Chinese and Japanese (written
  without spaces; punctuation stays with the character before it). A word longer than a
  line gets a line of its own, never cut. Wide (CJK) characters count as two columns of a
  line, as they take two on screen: 42 columns hold 21 of them.
- Lines are balanced, preferring a break after punctuation when it is close.
- A segment too long for one cue (characters or seconds) is split into as few cues as
  possible, preferring splits after sentence punctuation, then clause punctuation, and at
  the longest pause. With word timestamps the cue times are the words' real times. Without
  them, times are interpolated by character count over the segment: an approximation, as
  speech rate varies, but the best that the segment alone can give.
- No word is lost or repeated: the cues of a segment hold exactly its words, in order.
- Cues are in order and never overlap. A single word that lasts longer than
  `max_cue_seconds` makes a longer cue, as it cannot be split.

Word highlighting (`highlight_words`, only where words have timestamps) repeats each cue once
per word, the spoken word underlined with `<u>`, which both SRT and WebVTT define, and which
browsers, VLC, mpv and ffmpeg all render. WebVTT's karaoke-style inline timestamps
(`<00:00:01.500>`) were not chosen: they show nothing unless the page styles `::cue(:past)`,
and most desktop players and converters drop them, so the highlight would be lost.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from watcherd.transcript import Segment, Word

SENTENCE_END = ".!?…。！？"
CLAUSE_END = ",;:–—、，；："
CLOSING = "\"')]}»”’」』）》〉】"
OPENING = "“‘「『（《〈【"  # stay with what follows them
CLOSE_GAP = 0.5  # pauses shorter than this are bridged, so the text does not flicker off and on
CUE_COST = 1000.0  # dominates the other costs: the fewest cues always win


@dataclass(frozen=True)
class Layout:
    max_line_chars: int = 42
    max_lines: int = 2
    max_cue_seconds: float = 7.0
    highlight_words: bool = False

    def __post_init__(self) -> None:
        if self.max_line_chars < 1 or self.max_lines < 1 or not self.max_cue_seconds > 0:
            raise ValueError(f"invalid subtitle layout: {self}")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]
    words: tuple[Word, ...] = ()  # with timestamps only; times clamped into the segment
    current: int | None = None  # index into words of the word to highlight
    speaker: str | None = None  # diarized transcripts: who says it
    new_turn: bool = False  # the first cue of a speaker's turn (and its highlighted copies)

    def text(self, escape: Callable[[str], str] = lambda s: s) -> str:
        """The cue's lines, escaped for the format, with the current word underlined."""
        full = "\n".join(self.lines)
        if self.current is None:
            return escape(full)
        pos = 0
        for k, word in enumerate(self.words):
            piece = _piece(word)
            # The lines are the pieces joined by whitespace: skip it to find the next piece.
            while pos < len(full) and full[pos].isspace():
                pos += 1
            if k == self.current:
                end = pos + len(piece)
                return f"{escape(full[:pos])}<u>{escape(piece)}</u>{escape(full[end:])}"
            pos += len(piece)
        return escape(full)


def escape_vtt(text: str) -> str:
    """WebVTT reads `<` as a tag and `&` as an entity: escape them in cue text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class _Unit:
    """An unbreakable stretch of text, and the words that make it. `space`: whether a space
    separates it from the unit before (not between Chinese or Japanese characters)."""

    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()
    space: bool = True


def _piece(word: Word) -> str:
    return " ".join(word.word.split())


def is_cjk(char: str) -> bool:
    """A character of a script written without spaces: Chinese, Japanese kana."""
    code = ord(char)
    return 0x3040 <= code <= 0x30FF or 0x3400 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF


def _width(text: str) -> int:
    """Columns on screen: wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _joined(units: list[_Unit]) -> str:
    """The units' text as a line: spaces where they had them, none before the first."""
    return "".join((" " if u.space and k else "") + u.text for k, u in enumerate(units))


def _pieces(token: str) -> list[str]:
    """A space-free token cut between Chinese or Japanese characters; punctuation and
    closing marks stay with what they follow, opening marks with what follows them."""
    pieces: list[str] = []
    for char in token:
        attach = pieces and (
            (not is_cjk(char) and not is_cjk(pieces[-1][-1]))
            or char in SENTENCE_END + CLAUSE_END + CLOSING
            or pieces[-1][-1] in OPENING
        )
        if attach:
            pieces[-1] += char
        else:
            pieces.append(char)
    return pieces


def _units_from_words(seg: Segment, start: float, end: float) -> list[_Unit]:
    units: list[_Unit] = []
    t, new = start, True
    for w in seg.words:
        # Clamp into the segment and make monotonic, so cues built from them cannot overlap.
        s = min(max(w.start, t), end)
        e = min(max(w.end, s), end)
        t = e
        piece = _piece(w)
        if not piece:
            new = True
            continue
        word = replace(w, start=s, end=e)
        spaced = new or w.word[:1].isspace()
        if spaced or not units:
            units.append(_Unit(piece, s, e, (word,)))
        elif len(_pieces(units[-1].text + piece)) > len(_pieces(units[-1].text)):
            units.append(_Unit(piece, s, e, (word,), space=False))  # a CJK character
        else:  # no space before it: part of the previous word ("don" + "'t")
            u = units[-1]
            units[-1] = replace(u, text=u.text + piece, end=e, words=(*u.words, word))
        new = w.word[-1:].isspace()
    return units


def _units(seg: Segment) -> list[_Unit]:
    start, end = seg.start, max(seg.start, seg.end)
    tokens = seg.text.split()
    if seg.words:
        units = _units_from_words(seg, start, end)
        # The segment text is the reference; words that disagree with it are not trusted.
        if _joined(units).split() == tokens:
            return units
    pieces = [(piece, k == 0) for tok in tokens for k, piece in enumerate(_pieces(tok))]
    total = sum(len(piece) + spaced for piece, spaced in pieces)
    units, done = [], 0
    for piece, spaced in pieces:  # times proportional to characters (and spaces)
        a = start + (end - start) * done / total
        done += len(piece) + spaced
        units.append(_Unit(piece, a, start + (end - start) * done / total, space=spaced))
    return units


def _punct_cost(text: str, clause: float, other: float) -> float:
    """The cost of a break after text: none after a sentence, less after a clause."""
    last = text.rstrip(CLOSING)[-1:] or " "
    return 0.0 if last in SENTENCE_END else clause if last in CLAUSE_END else other


def _count_lines(units: list[_Unit], width: int) -> int:
    """Greedy filling gives the fewest lines; an over-long word takes a line by itself."""
    lines, cur = 1, 0
    for u in units:
        size = _width(u.text)
        if cur == 0:
            cur = size
        elif cur + u.space + size <= width:
            cur += u.space + size
        else:
            lines, cur = lines + 1, size
    return lines


def _wrap(units: list[_Unit], width: int) -> list[str]:
    """Fewest lines, then the most balanced ones, preferring breaks after punctuation."""
    lines, n = _count_lines(units, width), len(units)
    if lines == 1:
        return [_joined(units)]
    # best[(k, j)]: (cost, i) of the first j units in k lines, the k-th being units[i:j].
    ends = [0]  # ends[j] - ends[i] - units[i].space: the width of the line units[i:j]
    for u in units:
        ends.append(ends[-1] + u.space + _width(u.text))
    best: dict[tuple[int, int], tuple[float, int]] = {(0, 0): (0.0, 0)}
    for k in range(1, lines + 1):
        for j in range(k, n + 1):
            for i in range(j - 1, k - 2, -1):
                length = ends[j] - ends[i] - units[i].space
                if j - i > 1 and length > width:
                    break
                if (k - 1, i) not in best:
                    continue
                cost = best[(k - 1, i)][0] + 100 * (min(length, width) / width) ** 2
                if j < n:
                    cost += _punct_cost(units[j - 1].text, 8, 20)
                if cost < best.get((k, j), (float("inf"), 0))[0]:
                    best[(k, j)] = (cost, i)
    out, j = [], n
    for k in range(lines, 0, -1):
        i = best[(k, j)][1]
        out.append(_joined(units[i:j]))
        j = i
    return out[::-1]


def _split(seg: Segment, units: list[_Unit], layout: Layout) -> list[Cue]:
    """Split a segment's units into the fewest valid cues, at the best places (a small DP)."""
    n, width = len(units), layout.max_line_chars

    def start_at(i: int) -> float:
        return seg.start if i == 0 else units[i].start

    def end_at(j: int) -> float:  # end of a cue whose last unit is j
        if j == n - 1:
            return max(seg.start, seg.end)
        nxt = units[j + 1].start
        return nxt if nxt - units[j].end < CLOSE_GAP else units[j].end

    # Splitting after unit j: cheapest after a sentence, then a clause, and at long pauses.
    break_cost = [
        _punct_cost(units[j].text, 30, 60) - 50 * min(units[j + 1].start - units[j].end, 1.0)
        for j in range(n - 1)
    ] + [0.0]
    capacity = width * layout.max_lines
    best: list[tuple[float, int]] = [(0.0, 0)] + [(float("inf"), 0)] * n
    for i in range(n):
        if best[i][0] == float("inf"):
            continue
        chars, lines, cur = 0, 1, 0  # greedy line filling, extended one unit at a time
        for j in range(i + 1, n + 1):  # cue = units[i:j]
            unit = units[j - 1]
            size, space = _width(unit.text), unit.space and j - 1 > i
            chars += space + size
            if cur == 0:
                cur = size
            elif cur + space + size <= width:
                cur += space + size
            else:
                lines, cur = lines + 1, size
            too_long = end_at(j - 1) - start_at(i) > layout.max_cue_seconds + 1e-9
            if j - i > 1 and (too_long or lines > layout.max_lines):
                break  # a single unit is always allowed: it cannot be split further
            cost = best[i][0] + CUE_COST + 30 * (chars / capacity) ** 2 + break_cost[j - 1]
            if cost < best[j][0]:
                best[j] = (cost, i)
    out, j = [], n
    while j:
        i = best[j][1]
        group = units[i:j]
        words = tuple(w for u in group for w in u.words)
        lines = tuple(_wrap(group, width))
        out.append(Cue(start_at(i), end_at(j - 1), lines, words))
        j = i
    return out[::-1]


def _highlighted(cue: Cue) -> list[Cue]:
    """One cue per word: each word underlined from its start until the next word starts."""
    out = []
    last = len(cue.words) - 1
    for k, w in enumerate(cue.words):
        s = cue.start if k == 0 else min(max(w.start, cue.start), cue.end)
        e = cue.end if k == last else min(max(cue.words[k + 1].start, s), cue.end)
        if out:
            s = max(s, out[-1].end)
        if e > s:  # a zero-length cue would never show
            out.append(replace(cue, start=s, end=e, current=k))
    return out or [cue]


def cues(segments: Iterable[Segment], layout: Layout | None = None) -> list[Cue]:
    """The subtitle cues of the segments, in order and never overlapping."""
    layout = layout or Layout()
    out: list[Cue] = []
    prev_end = float("-inf")
    prev_speaker = None
    for seg in segments:
        units = _units(seg)
        if not units:
            continue
        for cue in _split(seg, units, layout):
            # Segments may overlap (or run backwards): never let their cues do so.
            start = max(cue.start, prev_end)
            new_turn = seg.speaker is not None and seg.speaker != prev_speaker
            cue = replace(
                cue, start=start, end=max(cue.end, start), speaker=seg.speaker, new_turn=new_turn
            )
            prev_end, prev_speaker = cue.end, seg.speaker
            use_words = layout.highlight_words and cue.words
            out.extend(_highlighted(cue) if use_words else [cue])
    return out
