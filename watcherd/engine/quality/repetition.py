"""Cut repetition loops: a word or phrase said over and over, Whisper's classic failure.

When every fallback temperature still loops ("Thank you. Thank you. Thank you. ..."), the
loop is cut down to its first occurrence. People do repeat themselves, but not more than
MAX_REPEATS times in a row; the test suite checks that real transcripts are untouched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from watcherd.transcript import Segment

MAX_REPEATS = 4  # more consecutive repeats than this is a loop, not speech
MAX_NGRAM = 16  # longest repeated phrase looked for, in words
LONG_WORD = 20  # a longer "word" is unspaced script (zh, ja, th): look in its characters


def _key(unit: str) -> str:
    """Compare words without case or punctuation: "Thank you." repeats "thank you,"."""
    return re.sub(r"\W", "", unit.lower())


def loop_mask(keys: Sequence[str], max_repeats: int = MAX_REPEATS) -> list[bool]:
    """Which units to keep: for each n-gram repeated more than `max_repeats` times in a
    row, only its first occurrence (and no trailing part-repeat at the very end)."""
    keep = [True] * len(keys)
    i = 0
    while i < len(keys):
        longest = min(MAX_NGRAM, (len(keys) - i) // (max_repeats + 1))
        for n in range(1, longest + 1):  # shortest first: "a a a a a" is a 1-gram loop
            gram = list(keys[i : i + n])
            count = 1
            while list(keys[i + count * n : i + (count + 1) * n]) == gram:
                count += 1
            if count > max_repeats:
                end = i + count * n
                tail = list(keys[end:])
                if len(tail) < n and gram[: len(tail)] == tail:  # cut off mid-repeat
                    end = len(keys)
                keep[i + n : end] = [False] * (end - i - n)
                i = end - 1
                break
        i += 1
    return keep


def _cut_word(word: str) -> str:
    if len(word) < LONG_WORD:
        return word
    mask = loop_mask([_key(c) for c in word])
    return "".join(c for c, k in zip(word, mask, strict=True) if k)


def cut_loops(text: str) -> str:
    """`text` with its loops cut; unchanged (same string) when it has none."""
    words = text.split()
    mask = loop_mask([_key(w) for w in words])
    cut = [_cut_word(w) for w, k in zip(words, mask, strict=True) if k]
    return text if cut == words else " ".join(cut)


def cut_segment_loops(segments: Sequence[Segment]) -> list[Segment]:
    """Cut loops in a run of segments, also loops that span them (one "Thank you." per
    segment); segments left empty are dropped, and their words follow their text."""
    units = [(i, w) for i, s in enumerate(segments) for w in s.text.split()]
    mask = loop_mask([_key(w) for _, w in units])
    kept: list[list[str]] = [[] for _ in segments]
    for (i, word), k in zip(units, mask, strict=True):
        if k:
            kept[i].append(_cut_word(word))
    result = []
    for segment, words in zip(segments, kept, strict=True):
        if words == segment.text.split():
            result.append(segment)
        elif words:
            result.append(_retext(segment, words))
    return result


def _bare(text: str) -> str:
    return "".join(text.split())


def _retext(segment: Segment, words: list[str]) -> Segment:
    """The segment with text `words`, keeping the timed words that spell what is left."""
    text, timed = " ".join(words), segment.words
    old = _bare(segment.text)
    if not timed or "".join(_bare(w.word) for w in timed) != old:
        return replace(segment, text=text)
    spans, pos = [], 0  # where the kept words lie in the old text, without whitespace
    for word in words:
        found = old.find(word, pos)
        if found >= 0:
            spans.append((found, found + len(word)))
            pos = found + len(word)
    survivors, start = [], 0
    for w in timed:
        end = start + len(_bare(w.word))
        if any(a < end and start < b for a, b in spans):
            survivors.append(w)
        start = end
    if not survivors:
        return replace(segment, text=text, words=())
    return replace(segment, text=text, words=tuple(survivors), end=survivors[-1].end)
