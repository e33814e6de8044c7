"""Batched greedy decoding: many 30 s windows at once, each row with its own end-of-text
and its own timestamps, over any compute path (`compute.Compute`).

Each step: the compute path's logits for the rows still decoding, Whisper's rules on
them (`rules`, vectorised over the batch, no per-row Python), then a token per row. The
rows' state (timestamps so far, ended or not, log-probability) is kept in the compute
path's own arrays, so on an accelerator nothing is read back but every few steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from mlx_whisper.tokenizer import Tokenizer

from watcherd.engine.compute import Compute, KeysValues
from watcherd.engine.decoding import rules

CHECK_EVERY = 8  # steps between calls of `check` (progress, stop, cancel)


@dataclass(frozen=True)
class RowResult:
    tokens: list[int]  # sampled tokens, without the prompt and without end-of-text
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    token_logprobs: tuple[float, ...] = ()  # one per token, for word probabilities
    held_at: int | None = None  # the token where end-of-text was first refused (`hold`)


class State:
    """Per-row state, as arrays of the compute path."""

    FIELDS = ("last_is_ts", "penult_is_ts", "last_ts", "done", "sum_logprob", "count",
              "spoke", "held_at")  # fmt: skip

    def __init__(self, batch: int, xp):
        # As in Whisper, a sequence shorter than two tokens counts as ending in a timestamp
        # pair, so the first timestamp is followed by text, not by a second timestamp.
        # (The first step has its own rule: it must be a timestamp.)
        self.last_is_ts = xp.ones((batch,), dtype=xp.bool_)
        self.penult_is_ts = xp.ones((batch,), dtype=xp.bool_)
        self.last_ts = xp.full((batch,), -1, dtype=xp.int32)  # last timestamp token, or -1
        self.done = xp.zeros((batch,), dtype=xp.bool_)
        self.sum_logprob = xp.zeros((batch,), dtype=xp.float32)
        self.count = xp.zeros((batch,), dtype=xp.int32)  # tokens sampled, end-of-text too
        self.spoke = xp.zeros((batch,), dtype=xp.bool_)  # a text token was sampled
        self.held_at = xp.full((batch,), -1, dtype=xp.int32)  # see RowResult.held_at

    def arrays(self) -> list:
        return [getattr(self, name) for name in self.FIELDS]

    @classmethod
    def of(cls, **values) -> State:
        state = cls.__new__(cls)
        for name in cls.FIELDS:
            setattr(state, name, values[name])
        return state


class BatchDecoder:
    """Greedy (or sampled, for the fallback) decoding of a batch of encoded windows."""

    def __init__(
        self,
        compute: Compute,
        tokenizer: Tokenizer,
        *,
        sample_len: int | None = None,
        max_initial_timestamp: float = 1.0,
    ):
        self.compute = compute
        self.tokenizer = tokenizer
        self.n_ctx = compute.dims.n_text_ctx
        self.sample_len = sample_len or self.n_ctx // 2
        self.eot = tokenizer.eot
        self.ts_begin = tokenizer.timestamp_begin
        n_vocab = compute.dims.n_vocab
        self.rules = [
            rules.FirstIsATimestamp(compute, tokenizer, n_vocab, max_initial_timestamp),
            rules.SuppressTokens(compute, tokenizer),
            rules.TimestampsInPairs(compute, tokenizer, n_vocab),
            rules.TimestampsWin(compute),
        ]
        self.hold_end = rules.HoldEnd(compute, tokenizer)
        self._steps: dict = {}  # see `_step`

    def cross_kv(self, features) -> KeysValues:
        return self.compute.cross_kv(features)

    def masked_logits(self, logits, state: State, first: bool, hold=None):
        """The logits with every rule applied, and where each row first wanted to end."""
        compute = self.compute
        text, stamps = compute.split(logits, self.ts_begin)
        for rule in self.rules:
            text, stamps = rule.apply(text, stamps, state, first)
        held_at = state.held_at
        if hold is not None:
            text, held_at = self.hold_end.apply(text, stamps, state, hold)
        return compute.join(logits, text, stamps), held_at

    def _choose(self, logits, arrays, noise, hold, first: bool, temperature: float):
        """Whisper's rules on a step's logits, a token per row, and the rows' new state:
        (chosen, its log-probability, state arrays)."""
        compute, xp = self.compute, self.compute.xp
        state = State.of(**dict(zip(State.FIELDS, arrays, strict=True)))
        logits, held_at = self.masked_logits(logits, state, first, *hold)
        chosen = compute.sample(logits, temperature, noise)
        chosen_lp = xp.take_along_axis(compute.log_softmax(logits), chosen[:, None], axis=-1)
        chosen_lp = chosen_lp[:, 0]
        live = ~state.done
        chosen = xp.where(live, chosen, self.eot)
        is_ts = chosen >= self.ts_begin
        new = State.of(
            sum_logprob=state.sum_logprob + xp.where(live, chosen_lp, 0.0),
            count=state.count + live.astype(xp.int32),
            penult_is_ts=xp.where(live, state.last_is_ts, state.penult_is_ts),
            last_is_ts=xp.where(live, is_ts, state.last_is_ts),
            last_ts=xp.where(live & is_ts, chosen, state.last_ts),
            done=state.done | (chosen == self.eot),
            spoke=state.spoke | (live & (chosen < self.eot)),
            held_at=held_at,
        )
        return chosen, chosen_lp, new.arrays()

    def _step(self, temperature: float, held: bool):
        """A step after the first, as a function of arrays only: (tokens, pos, self_kv,
        cross_kv, state arrays, noise[, hold]) -> (chosen, its log-probability, self_kv,
        state arrays). Made once per kind, and handed to the compute path, which may
        compile it (`Compute.step`)."""
        key = (temperature, held)
        if key not in self._steps:

            def step(tokens, pos, self_kv, cross_kv, arrays, noise, *hold):
                done = arrays[State.FIELDS.index("done")]
                logits, self_kv = self.compute.logits(tokens, pos, self_kv, cross_kv, done)
                chosen, chosen_lp, arrays = self._choose(logits, arrays, noise, hold, False,
                                                         temperature)  # fmt: skip
                return chosen, chosen_lp, self_kv, arrays

            self._steps[key] = self.compute.step(step)
        return self._steps[key]

    def decode(
        self,
        cross_kv: KeysValues,
        prefix: list[int],
        temperature: float = 0.0,
        seeds: Sequence[int] | None = None,
        check: Callable[[], None] | None = None,
        hold: np.ndarray | None = None,
    ) -> list[RowResult]:
        """Decode every row of an encoded batch; `prefix` is the shared prompt + SOT sequence.
        `check` runs every few steps and may raise to abandon the batch (stop, cancel).
        `hold`: per row, a timestamp (in steps of TIME_PRECISION into the window) before
        which a row that has spoken may not end (`rules.HoldEnd`). `seeds`: per row, the
        seed of its sampling (at a temperature above 0)."""
        compute, xp = self.compute, self.compute.xp
        batch = cross_kv[0][0].shape[0]
        rows = compute.batch_size(batch)  # padded with ended rows, where that pays
        if rows > batch:
            pad = xp.array(list(range(batch)) + [0] * (rows - batch))
            cross_kv = [(k[pad], v[pad]) for k, v in cross_kv]
        limit = min(self.sample_len, self.n_ctx - len(prefix))
        self_kv = compute.empty_cache(rows, len(prefix) + limit)
        state = State(rows, xp)
        if rows > batch:
            state.done = xp.array(np.arange(rows) >= batch)
        tokens = xp.array([prefix] * rows, dtype=xp.int32)
        seeds = list(seeds if seeds is not None else range(batch)) + [0] * (rows - batch)
        noise = compute.noise(seeds, self.sample_len)
        held = ()
        if hold is not None:
            held = (xp.array(np.pad(np.asarray(hold, np.int32), (0, rows - batch))),)
        # The first step reads the whole prompt, and with it the no-speech probability
        # right after the start-of-transcript token, in the same pass.
        sot = prefix.index(self.tokenizer.sot)
        both, self_kv = compute.prefix_logits(tokens, self_kv, cross_kv, (sot, len(prefix) - 1))
        no_speech = self._no_speech_probs(both[:, 0])
        chosen, logprob, arrays = self._choose(both[:, 1], state.arrays(), noise[0], held, True,
                                               temperature)  # fmt: skip
        del both
        sampled, logprobs, pos = [chosen], [logprob], len(prefix)
        tokens = chosen[:, None]
        compute.schedule(chosen, logprob, *arrays)
        done = State.FIELDS.index("done")
        step = self._step(temperature, hold is not None)
        for i in range(1, limit):
            chosen, logprob, self_kv, arrays = step(
                tokens, pos, self_kv, cross_kv, arrays, noise[i], *held
            )
            pos += 1
            tokens = chosen[:, None]
            sampled.append(chosen)
            logprobs.append(logprob)
            compute.schedule(chosen, logprob, *arrays)
            if check is not None and i % CHECK_EVERY == CHECK_EVERY - 1:
                check()
            if i % compute.sync_every == compute.sync_every - 1 and bool(arrays[done].all()):
                break
        state = State.of(**dict(zip(State.FIELDS, arrays, strict=True)))
        matrix = compute.to_numpy(xp.stack(sampled, axis=1))
        lps = compute.to_numpy(xp.stack(logprobs, axis=1))
        sum_logprob, count = compute.to_numpy(state.sum_logprob), compute.to_numpy(state.count)
        held_at = compute.to_numpy(state.held_at)
        results = []
        for row in range(batch):  # padding rows, if any, come after
            seq = matrix[row].tolist()
            seq = seq[: seq.index(self.eot)] if self.eot in seq else seq
            results.append(RowResult(
                tokens=[int(t) for t in seq],
                avg_logprob=float(sum_logprob[row]) / max(int(count[row]), 1),
                no_speech_prob=float(no_speech[row]),
                temperature=temperature,
                token_logprobs=tuple(lps[row, : len(seq)].tolist()),
                held_at=int(held_at[row]) if held_at[row] >= 0 else None,
            ))  # fmt: skip
        return results

    def _no_speech_probs(self, logits) -> np.ndarray:
        """P(<|nospeech|>) right after the start-of-transcript token, from its logits."""
        compute = self.compute
        if self.tokenizer.no_speech is None:
            return np.full(logits.shape[0], np.nan)
        token = self.tokenizer.no_speech
        lse = compute.logsumexp(logits)
        return np.exp(compute.to_numpy(logits[:, token : token + 1] - lse))[:, 0]
