"""Speaker turns onto a transcript: each word gets the speaker who talks over it, and a
segment is split where the speaker changes; named speakers by their reference voices.

Speakers are renumbered in order of first appearance in the transcript (then any that only
appear in the turns, a cough or laughter with no words), and labelled `Speaker 1`,
`Speaker 2`, ... or by the name whose reference voice matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from watcherd.transcript import Segment, Transcript, Turn, Word

# Cosine similarity from which a speaker's voice is taken to be a reference voice (same-
# speaker CAM++ embeddings in the measurements were 0.7-0.95, different people below 0.6).
NAME_SIMILARITY = 0.6


def _speaker_over(turns: Sequence[Turn], start: float, end: float) -> int:
    """Who talks most within [start, end]; the nearest turn's speaker when nobody does."""
    talk: dict[int, float] = {}
    for t in turns:
        overlap = min(end, t.end) - max(start, t.start)
        if overlap > 0:
            talk[t.speaker] = talk.get(t.speaker, 0.0) + overlap
    if talk:
        return max(talk, key=talk.__getitem__)
    middle = (start + end) / 2
    nearest = min(turns, key=lambda t: max(t.start - middle, middle - t.end, 0.0))
    return nearest.speaker


def _split(segment: Segment, turns: Sequence[Turn]) -> list[Segment]:
    # Speakers are still the diarizer's numbers here; attribute() labels them after.
    if not segment.words:
        return [replace(segment, speaker=_speaker_over(turns, segment.start, segment.end))]
    words = [replace(w, speaker=_speaker_over(turns, w.start, w.end)) for w in segment.words]
    runs: list[list[Word]] = [[words[0]]]
    for word in words[1:]:
        if word.speaker == runs[-1][-1].speaker:
            runs[-1].append(word)
        else:
            runs.append([word])
    if len(runs) == 1:
        return [replace(segment, words=tuple(words), speaker=words[0].speaker)]
    return [
        replace(
            segment,
            start=segment.start if i == 0 else run[0].start,
            end=segment.end if i == len(runs) - 1 else run[-1].end,
            text="".join(w.word for w in run),
            words=tuple(run),
            speaker=run[0].speaker,
        )
        for i, run in enumerate(runs)
    ]


def attribute(
    transcript: Transcript, turns: Sequence[Turn], names: dict[int, str] | None = None
) -> Transcript:
    """The transcript with a speaker's label on every segment and word. `turns` number
    speakers as the diarizer did; `names` maps some of those numbers to names."""
    names = names or {}
    if not turns:  # nobody found (the diarizer heard no speech): one speaker says it all
        turns = [Turn(0.0, max(transcript.audio_seconds, 0.0), 0)]
    segments = [piece for s in transcript.segments for piece in _split(s, turns)]
    order: dict[int, int] = {}
    for speaker in [s.speaker for s in segments if s.text.strip()] + [t.speaker for t in turns]:
        order.setdefault(speaker, len(order))

    label = {old: names.get(old) or f"Speaker {new + 1}" for old, new in order.items()}

    def labelled(item):
        return replace(item, speaker=label[item.speaker])

    segments = [replace(labelled(s), words=tuple(labelled(w) for w in s.words)) for s in segments]
    return replace(
        transcript,
        segments=tuple(segments),
        speakers=tuple(label[old] for old in order),  # dicts keep the order of first appearance
        turns=tuple(
            replace(t, speaker=order[t.speaker])
            for t in sorted(turns, key=lambda t: (t.start, t.end))
        ),
    )


def name_speakers(
    voices: np.ndarray, references: dict[str, np.ndarray], similarity: float = NAME_SIMILARITY
) -> dict[int, str]:
    """Speaker number -> name, for the speakers whose voice matches a reference voice
    closely enough; no name is given twice, nor two names to one speaker."""
    if not len(voices) or not references:
        return {}
    from scipy.optimize import linear_sum_assignment

    names = list(references)
    scores = voices @ np.stack([references[n] for n in names]).T
    rows, cols = linear_sum_assignment(scores, maximize=True)
    return {int(r): names[c] for r, c in zip(rows, cols, strict=True) if scores[r, c] >= similarity}
