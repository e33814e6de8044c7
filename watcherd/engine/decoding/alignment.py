"""Word-level timestamps from the cross-attention of the alignment heads, as Whisper does.

For a batch of decoded rows, one teacher-forced decoder pass over
`SOT… <|notimestamps|> text EOT` runs on the cross-attention keys/values the decoder
already projected, so the encoder never runs again (mlx-whisper re-encodes per segment).
Per row, the alignment heads' attention over the frames the chunk covers is z-scored,
median-filtered and averaged over heads; dynamic time warping then finds the monotonic
token-to-frame path, and each word starts where the path enters its first token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from mlx_whisper.tokenizer import Tokenizer

from watcherd.engine.audio.chunks import Chunk
from watcherd.engine.compute import KeysValues
from watcherd.engine.decoding.decoder import BatchDecoder, RowResult
from watcherd.transcript import Segment, Word

FRAMES_PER_SECOND = 50  # audio-feature frames: 1500 per 30 s window
MEDFILT_WIDTH = 7
PREPENDED = "\"'“¿([{-"  # Whisper's: opening marks join the next word
APPENDED = "\"'.。,，!！?？:：”)]}、"  # closing marks join the previous word

Group = tuple[str, list[Word]]  # a candidate segment's text and its timed words


@dataclass
class Timing:
    text: str
    probs: list[float]
    start: float
    end: float


def text_groups(result: RowResult, tokenizer: Tokenizer) -> list[tuple[list[int], list[float]]]:
    """Text tokens and their probabilities between timestamps: one group per segment that
    `segments.parse` may make from the row, in its order."""
    groups: list[tuple[list[int], list[float]]] = []
    tokens: list[int] = []
    probs: list[float] = []
    for token, logprob in zip(result.tokens, result.token_logprobs, strict=True):
        if token >= tokenizer.timestamp_begin:
            if tokens:
                groups.append((tokens, probs))
            tokens, probs = [], []
        elif token < tokenizer.eot:
            tokens.append(token)
            probs.append(math.exp(logprob))
    if tokens:
        groups.append((tokens, probs))
    return groups


def _median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over a sliding window along the last axis, edges reflected (as Whisper)."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1), axis=-1)


def dtw_starts(cost: np.ndarray) -> np.ndarray:
    """The monotonic path of least total cost through `cost` (tokens × frames), from the
    first cell to the last; for each token, the first frame the path gives it.

    Each row's recurrence, c[j] = x[j] + min(a[j], c[j-1]) with a[j] the best of the cells
    above and diagonal, is a min-plus scan: c = S + running_min(a - S_before), S being the
    row's prefix sums. So a row costs a few NumPy calls, not a Python loop over frames."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        above = np.minimum(acc[i - 1, :-1], acc[i - 1, 1:])
        sums = np.cumsum(cost[i - 1], dtype=np.float64)
        before = np.concatenate(([0.0], sums[:-1]))
        acc[i, 1:] = sums + np.minimum.accumulate(above - before)
    starts = np.zeros(n, dtype=np.int64)
    i, j = n, m
    while i > 0 and j > 0:  # backtrack with Whisper's tie-breaking: left, then up, then diagonal
        starts[i - 1] = j - 1  # the last visit to a row going back is its first frame
        diagonal, up, left = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        if diagonal < up and diagonal < left:
            i, j = i - 1, j - 1
        elif up < diagonal and up < left:
            i -= 1
        else:
            j -= 1
    return starts


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.exp(x - x.max(axis=-1, keepdims=True))
    return x / x.sum(axis=-1, keepdims=True)


def _token_starts(scores: np.ndarray, first: int, count: int) -> np.ndarray:
    """Frames where each of `count` + 1 rows from `first` begins, from softmaxed scores
    (K, L, frames) of one row."""
    std = scores.std(axis=1, keepdims=True)
    normal = (scores - scores.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)
    normal = normal[:, first : first + count + 1]  # the filter is per row: trim first
    matrix = sum(_median_filter(head, MEDFILT_WIDTH) for head in normal) / len(normal)
    return dtw_starts(-matrix)


def merge_punctuation(words: list[Timing]) -> list[Timing]:
    """Opening marks join the next word and closing marks the previous one, as in Whisper;
    the word keeps its own times, and its probability averages all its tokens."""

    def join(first: Timing, second: Timing, keep: Timing, drop: Timing) -> None:
        keep.text, keep.probs = first.text + second.text, first.probs + second.probs
        drop.text, drop.probs = "", []

    j = len(words) - 1
    for i in range(len(words) - 2, -1, -1):
        if words[i].text.startswith(" ") and words[i].text.strip() in PREPENDED:
            join(words[i], words[j], keep=words[j], drop=words[i])
        else:
            j = i
    i = 0
    for j in range(1, len(words)):
        if not words[i].text.endswith(" ") and words[j].text in APPENDED:
            join(words[i], words[j], keep=words[i], drop=words[j])
        else:
            i = j
    return [w for w in words if w.text]


def word_timings(
    decoder: BatchDecoder,
    cross_kv: KeysValues,
    results: list[RowResult],
    batch: list[Chunk],
    rows: list[int],
) -> dict[int, list[Group]]:
    """Timed words of the given rows of a decoded batch, grouped per candidate segment."""
    tokenizer = decoder.tokenizer
    grouped = {i: text_groups(results[i], tokenizer) for i in rows}
    rows = [i for i in rows if grouped[i]]
    if not rows:
        return {}
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    texts = {i: [t for tokens, _ in grouped[i] for t in tokens] for i in rows}
    length = len(prompt) + 1 + max(len(t) for t in texts.values())
    padded = [(prompt + texts[i] + [tokenizer.eot] * length)[:length] for i in rows]
    compute = decoder.compute
    if len(rows) < cross_kv[0][0].shape[0]:
        pick = compute.xp.array(rows)
        cross_kv = [(k[pick], v[pick]) for k, v in cross_kv]
    scores = compute.alignment_scores(np.array(padded, np.int32), cross_kv)
    timed: dict[int, list[Group]] = {}
    for r, i in enumerate(rows):
        chunk, count = batch[i], len(texts[i])
        frames = min(scores.shape[-1], max(1, math.ceil(chunk.seconds * FRAMES_PER_SECOND)))
        # Whisper's softmax over the frames the audio covers only, not the padding.
        row = _softmax(scores[r, :, : len(prompt) + count + 1, :frames])
        starts = _token_starts(row, len(prompt) - 1, count)
        times = starts / FRAMES_PER_SECOND + chunk.start_seconds
        timed[i], index = [], 0
        for tokens, probs in grouped[i]:
            words, local = [], 0
            for text, pieces in zip(*tokenizer.split_to_word_tokens(tokens), strict=True):
                end = local + len(pieces)
                span = times[index + local], times[index + end]
                words.append(Timing(text, probs[local:end], *span))
                local = end
            index += len(tokens)
            merged = [Word(float(w.start), float(w.end), w.text, float(np.mean(w.probs)))
                      for w in merge_punctuation(words)]  # fmt: skip
            timed[i].append((tokenizer.decode(tokens).strip(), merged))
    return timed


def attach(parsed: list[Segment], groups: list[Group]) -> list[Segment]:
    """Give each parsed segment the words of its group, clamped inside the segment.
    `segments.parse` drops some groups (empty, or of no duration), so groups are matched
    to segments by text, in order."""
    out, g = [], 0
    for segment in parsed:
        while g < len(groups) and groups[g][0] != segment.text:
            g += 1
        if g == len(groups):  # not expected; leave the rest without words
            out.append(segment)
            continue
        words = []
        for w in groups[g][1]:
            start = min(max(w.start, segment.start), segment.end)
            words.append(replace(w, start=start, end=min(max(w.end, start), segment.end)))
        out.append(replace(segment, words=tuple(words)))
        g += 1
    return out
