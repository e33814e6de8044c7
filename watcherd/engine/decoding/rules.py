"""Whisper's rules on the next token's logits, one small class per rule.

Each rule is written once, with the compute path's array operations (`Compute.add`,
`fill`, `fill_rows`, `logsumexp`): MLX builds new arrays, the CPU path changes its fresh
logits in place, two passes over the text columns instead of about six. The logits come
split into their text columns (everything before the first timestamp token) and their
timestamp columns, so that each rule touches only the columns it is about.
"""

from __future__ import annotations

import numpy as np
from mlx_whisper.tokenizer import Tokenizer

from watcherd.engine.compute import Compute

TIME_PRECISION = 0.02  # seconds per timestamp token


class FirstIsATimestamp:
    """The first token is a timestamp, no later than `max_initial` seconds."""

    def __init__(self, compute: Compute, tokenizer: Tokenizer, n_vocab: int, max_initial: float):
        tb = tokenizer.timestamp_begin
        latest = round(max_initial / TIME_PRECISION)
        stamps = np.full(n_vocab - tb, -np.inf, np.float32)
        stamps[: latest + 1] = 0.0
        self.compute = compute
        self.no_text = compute.xp.array(np.full(tb, -np.inf, np.float32))
        self.stamps = compute.xp.array(stamps)

    def apply(self, text, stamps, state, first: bool):
        if not first:
            return text, stamps
        return self.compute.add(text, self.no_text), self.compute.add(stamps, self.stamps)


class SuppressTokens:
    """Never the tokens that are not speech (music symbols, speaker marks), nor the task
    and prompt tokens, nor <|nospeech|> and <|notimestamps|>."""

    def __init__(self, compute: Compute, tokenizer: Tokenizer):
        t = tokenizer
        suppressed = set(t.non_speech_tokens)
        suppressed |= {t.transcribe, t.translate, t.sot, t.sot_prev, t.sot_lm}
        suppressed |= {token for token in (t.no_speech, t.no_timestamps) if token is not None}
        mask = np.zeros(t.timestamp_begin, np.float32)  # no timestamp is suppressed
        mask[sorted(suppressed)] = -np.inf
        self.compute = compute
        self.mask = compute.xp.array(mask)

    def apply(self, text, stamps, state, first: bool):
        if first:  # no text may come first anyway
            return text, stamps
        return self.compute.add(text, self.mask), stamps


class TimestampsInPairs:
    """Timestamps come in pairs (the end of one segment, the start of the next): after a
    lone timestamp no text (end-of-text may follow), after a pair no timestamp. And time
    never goes backwards: each segment has a nonzero length."""

    def __init__(self, compute: Compute, tokenizer: Tokenizer, n_vocab: int):
        self.compute = compute
        self.eot, self.tb = tokenizer.eot, tokenizer.timestamp_begin
        self.stamp_ids = compute.xp.arange(n_vocab - self.tb, dtype=compute.xp.int32)

    def apply(self, text, stamps, state, first: bool):
        if first:
            return text, stamps
        xp, lone = self.compute.xp, state.last_is_ts & ~state.penult_is_ts
        text = self.compute.fill_rows(text, lone, -np.inf, 0, self.eot)
        floor = xp.where(lone, state.last_ts, state.last_ts + 1)  # a lone one may be closed
        floor = xp.where(state.last_ts >= 0, floor, self.tb)[:, None] - self.tb
        pair = (state.last_is_ts & state.penult_is_ts)[:, None]
        refused = pair | (self.stamp_ids[None, :] < floor)
        return text, self.compute.fill(stamps, refused, -np.inf)


class TimestampsWin:
    """If the timestamps together are likelier than any single text token, take one.
    (Compared on raw logits: the normalising constant cancels out.)"""

    def __init__(self, compute: Compute):
        self.compute = compute

    def apply(self, text, stamps, state, first: bool):
        if first:
            return text, stamps
        mass = self.compute.logsumexp(stamps)
        wins = (mass > self.compute.xp.max(text, axis=-1, keepdims=True))[:, 0]
        return self.compute.fill_rows(text, wins, -np.inf), stamps


class HoldEnd:
    """A row that has spoken may not end before its `hold` (a timestamp, in steps of
    TIME_PRECISION into its window): it goes on with the rest of its window. Whisper
    sometimes ends early; going on costs a few steps, where decoding the rest again
    would cost a window. Where each row first wanted to end is kept (`held_at`), so
    that what it went on with can be judged apart."""

    def __init__(self, compute: Compute, tokenizer: Tokenizer):
        self.compute = compute
        self.eot, self.tb = tokenizer.eot, tokenizer.timestamp_begin

    def apply(self, text, stamps, state, hold):
        """The text columns with end-of-text refused where held, and the new `held_at`."""
        xp = self.compute.xp
        refused = state.spoke & ~state.done & (state.last_ts - self.tb < hold)
        best = xp.argmax(text, axis=-1)
        top = xp.take_along_axis(text, best[:, None], axis=-1)
        ends = (best == self.eot) & (top >= xp.max(stamps, axis=-1, keepdims=True))[:, 0]
        held_at = xp.where(refused & ends & (state.held_at < 0), state.count, state.held_at)
        text = self.compute.fill_rows(text, refused, -np.inf, self.eot, self.eot + 1)
        return text, held_at
