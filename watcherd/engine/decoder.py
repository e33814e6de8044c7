"""Batched greedy decoding: many 30 s chunks at once, each row with its own end-of-text
and its own timestamp tokens.

It reuses mlx-whisper's decoder weights but runs its own forward pass, shaped for speed:
- the cross-attention keys and values are projected, split into heads and scaled once
  per batch, not again on every step (mlx-whisper redoes this each step);
- the self-attention cache is preallocated to the full text context and written in place,
  so every step has the same shapes (an `mx.compile`d step measured no faster on the CPU,
  and compiling each new batch size stalled the first file for seconds, so it is not);
- Whisper's timestamp rules run vectorised, with no per-row Python loop; on a GPU they
  stay on the device, with no host sync per step.
On the CPU the forward pass is NumPy's (`cpu.Decoder`); the rules and the selection are
written once for both array libraries (`xp`: `mlx.core` or `numpy`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_whisper.tokenizer import Tokenizer
from mlx_whisper.whisper import Whisper

from watcherd.engine import cpu

SYNC_EVERY = 8  # steps between checks that every row has ended
TIME_PRECISION = 0.02  # seconds per timestamp token


@dataclass(frozen=True)
class RowResult:
    tokens: list[int]  # sampled tokens, without the prompt and without end-of-text
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    token_logprobs: tuple[float, ...] = ()  # one per token, for word probabilities
    held_at: int | None = None  # the token where end-of-text was first refused (`hold`)


def _logsumexp(xp, x):
    """log(sum(exp(x))) over the last axis, kept; -inf for a row of -inf."""
    if xp is mx:
        return mx.logsumexp(x, axis=-1, keepdims=True)
    top = x.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True))


class _State:
    """Per-row timestamp-rule state, as `xp` arrays."""

    def __init__(self, batch: int, xp=mx):
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

    def tree(self) -> list[mx.array]:
        return [self.last_is_ts, self.penult_is_ts, self.last_ts, self.done,
                self.sum_logprob, self.count, self.spoke, self.held_at]  # fmt: skip

    @classmethod
    def from_tree(cls, tree: list[mx.array]) -> _State:
        state = cls.__new__(cls)
        (state.last_is_ts, state.penult_is_ts, state.last_ts, state.done,
         state.sum_logprob, state.count, state.spoke, state.held_at) = tree  # fmt: skip
        return state


class BatchDecoder:
    """Greedy (or sampled, for fallback) decoding of a batch of encoded chunks."""

    def __init__(
        self,
        model: Whisper,
        tokenizer: Tokenizer,
        *,
        sample_len: int | None = None,
        max_initial_timestamp: float = 1.0,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.dims = model.dims
        self.n_ctx = model.dims.n_text_ctx
        self.sample_len = sample_len or self.n_ctx // 2
        self.eot = tokenizer.eot
        self.ts_begin = tokenizer.timestamp_begin
        self.max_initial_ts = round(max_initial_timestamp / TIME_PRECISION)
        n_vocab = model.dims.n_vocab
        suppress = np.zeros(n_vocab, np.float32)
        suppress[list(self._suppressed_tokens())] = -np.inf
        if tokenizer.no_timestamps is not None:
            suppress[tokenizer.no_timestamps] = -np.inf
        blank = np.zeros(n_vocab, np.float32)
        blank[tokenizer.encode(" ") + [self.eot]] = -np.inf
        first = np.full(n_vocab, -np.inf, np.float32)  # the first token must be a timestamp
        first[self.ts_begin : self.ts_begin + self.max_initial_ts + 1] = 0.0
        self.net = cpu.shared(cpu.Decoder, model) if cpu.use_cpu_path(model) else None
        self.xp = np if self.net else mx
        no_text = np.zeros(self.ts_begin, np.float32)
        no_text[: self.eot] = -np.inf
        xp = self.xp
        self.suppress = xp.array(suppress[: self.ts_begin])  # no timestamp is suppressed
        self.first_mask = xp.array(suppress + blank + first)
        self.no_text = xp.array(no_text)
        self.stamp_ids = xp.arange(n_vocab - self.ts_begin, dtype=xp.int32)
        # Evaluate now: a lazy array cannot be evaluated later from another thread.
        if xp is mx:
            mx.eval(self.suppress, self.first_mask, self.no_text, self.stamp_ids)

    def _suppressed_tokens(self) -> set[int]:
        t = self.tokenizer
        tokens = set(t.non_speech_tokens)
        tokens |= {t.transcribe, t.translate, t.sot, t.sot_prev, t.sot_lm}
        if t.no_speech is not None:
            tokens.add(t.no_speech)
        return tokens

    # --- the forward pass ------------------------------------------------------------

    def cross_kv(self, audio_features: mx.array) -> list[tuple]:
        """Project, split and scale the cross-attention keys/values once per batch: per
        layer, keys (B, H, Dh, T) and values (B, H, T, Dh), as `xp` arrays."""
        if self.net:
            return self.net.cross_kv(np.array(audio_features, copy=False))
        batch, n_audio, _ = audio_features.shape
        result = []
        for block in self.model.decoder.blocks:
            attn = block.cross_attn
            heads = attn.n_head
            scale = (audio_features.shape[-1] // heads) ** -0.25
            k = attn.key(audio_features).reshape(batch, n_audio, heads, -1)
            v = attn.value(audio_features).reshape(batch, n_audio, heads, -1)
            # Contiguous copies: a strided operand would be copied again by every matmul.
            k_t = mx.contiguous(k.transpose(0, 2, 3, 1) * scale)
            result.append((k_t, mx.contiguous(v.transpose(0, 2, 1, 3))))
        mx.eval(result)
        return result

    def _attend(self, q: mx.array, k_t: mx.array, v: mx.array, mask=None) -> mx.array:
        """q (B,H,n,Dh) scaled, k_t (B,H,Dh,L) scaled, v (B,H,L,Dh) -> (B,n,H*Dh)."""
        scores = q @ k_t
        if mask is not None:
            scores = scores + mask
        weights = mx.softmax(scores, axis=-1, precise=True)
        out = (weights @ v).transpose(0, 2, 1, 3)
        return out.reshape(out.shape[0], out.shape[1], -1)

    def _forward(self, tokens, pos, self_kv, cross_kv):
        """Decoder forward for `tokens` (B,n) at position `pos`; returns (logits, new self_kv)."""
        decoder = self.model.decoder
        batch, n = tokens.shape
        positions = pos + mx.arange(n)
        x = decoder.token_embedding(tokens) + decoder.positional_embedding[positions]
        columns = mx.arange(self.n_ctx)
        causal = mx.where(columns[None, :] <= positions[:, None], 0.0, -mx.inf).astype(x.dtype)
        new_kv = []
        for block, (k_cache, v_cache), (ck, cv) in zip(
            decoder.blocks, self_kv, cross_kv, strict=True
        ):
            attn = block.attn
            heads = attn.n_head
            h = block.attn_ln(x)
            scale = (h.shape[-1] // heads) ** -0.25
            q = attn.query(h).reshape(batch, n, heads, -1).transpose(0, 2, 1, 3) * scale
            k = attn.key(h).reshape(batch, n, heads, -1).transpose(0, 2, 1, 3) * scale
            v = attn.value(h).reshape(batch, n, heads, -1).transpose(0, 2, 1, 3)
            k_cache = mx.slice_update(k_cache, k, pos[None], axes=(2,))
            v_cache = mx.slice_update(v_cache, v, pos[None], axes=(2,))
            new_kv.append((k_cache, v_cache))
            x = x + attn.out(self._attend(q, k_cache.transpose(0, 1, 3, 2), v_cache, causal))
            h = block.cross_attn_ln(x)
            cross = block.cross_attn
            q = cross.query(h).reshape(batch, n, heads, -1).transpose(0, 2, 1, 3) * scale
            x = x + cross.out(self._attend(q, ck, cv))
            x = x + block.mlp2(nn.gelu(block.mlp1(block.mlp_ln(x))))
        x = decoder.ln(x)
        return decoder.token_embedding.as_linear(x[:, -1:]).astype(mx.float32)[:, 0], new_kv

    # --- one step: forward, Whisper's logit rules, token selection ------------------

    def _logits(self, tokens, pos: int, self_kv, cross_kv, done=None):
        """Logits (B, vocab) after `tokens` (B, n) at position `pos`, and the new caches.
        Rows `done` (a mask) may get any logits: on the CPU they skip cross-attention."""
        if self.net:
            live = None if done is None else np.flatnonzero(~done)
            return self.net.logits(tokens, pos, self_kv, cross_kv, live), self_kv
        return self._forward(tokens, mx.array(pos, dtype=mx.int32), self_kv, cross_kv)

    def _rules(self, logits, state: _State, first: bool):
        """Whisper's suppression and timestamp rules, on the text and timestamp columns
        apart, so that each rule touches only the columns it is about."""
        xp, tb = self.xp, self.ts_begin
        if xp is np:
            return self._rules_in_place(logits, state, first)
        if first:
            return logits + self.first_mask[None, :]
        text = logits[:, :tb] + self.suppress[None, :]
        last, penult = state.last_is_ts[:, None], state.penult_is_ts[:, None]
        # Timestamps come in pairs: after a lone one no text (end-of-text may follow),
        # after a pair no timestamp.
        text = xp.where(last & ~penult, text + self.no_text[None, :], text)
        stamps = xp.where(self._refused_stamps(state), -xp.inf, logits[:, tb:])
        # If the timestamps together are likelier than any single text token, take one.
        # (Compared on raw logits: the normalising constant cancels out.)
        ts_mass = _logsumexp(xp, stamps)
        text = xp.where(ts_mass > xp.max(text, axis=-1, keepdims=True), -xp.inf, text)
        return xp.concatenate([text, stamps], axis=1)

    def _rules_in_place(self, logits: np.ndarray, state: _State, first: bool) -> np.ndarray:
        """`_rules` on NumPy's logits (a fresh array each step), in place: two passes over
        the text columns instead of about six, and the masks written only on the rows they
        apply to (0.3 ms a step at batch 8)."""
        if first:
            logits += self.first_mask
            return logits
        text, stamps = logits[:, : self.ts_begin], logits[:, self.ts_begin :]
        text += self.suppress
        text[state.last_is_ts & ~state.penult_is_ts, : self.eot] = -np.inf  # see `_rules`
        stamps[self._refused_stamps(state)] = -np.inf
        text[_logsumexp(np, stamps)[:, 0] > text.max(axis=-1)] = -np.inf
        return logits

    def _refused_stamps(self, state: _State):
        """(B, n_stamps) mask of the timestamps a row may not take next: none after a pair;
        never going backwards, and each segment of nonzero length."""
        xp, tb = self.xp, self.ts_begin
        floor = xp.where(state.last_is_ts & ~state.penult_is_ts, state.last_ts, state.last_ts + 1)
        floor = xp.where(state.last_ts >= 0, floor, tb)[:, None] - tb
        pair = (state.last_is_ts & state.penult_is_ts)[:, None]
        return pair | (self.stamp_ids[None, :] < floor)

    def _refuse_end(self, logits, state: _State, hold):
        """Refuse end-of-text to the rows that have spoken and whose last timestamp is
        before their `hold`; returns the logits and where each row first wanted to end."""
        xp = self.xp
        refused = state.spoke & ~state.done & (state.last_ts - self.ts_begin < hold)
        wanted = refused & (xp.argmax(logits, axis=-1) == self.eot)
        held_at = xp.where(wanted & (state.held_at < 0), state.count, state.held_at)
        logits[:, self.eot] = xp.where(refused, -xp.inf, logits[:, self.eot])
        return logits, held_at

    def _log_probs(self, logits):
        if self.net:
            return self.net.log_softmax.run(x=logits)
        return logits - _logsumexp(self.xp, logits)

    def _sample(self, logits, temperature: float, noise):
        """Greedy, or a sample at `temperature` (`noise`: an MLX key or a NumPy generator)."""
        if temperature == 0:
            return self.xp.argmax(logits, axis=-1).astype(self.xp.int32)
        if self.xp is mx:
            return mx.random.categorical(logits / temperature, key=noise).astype(mx.int32)
        gumbel = noise.gumbel(size=logits.shape).astype(np.float32)  # Gumbel-max sampling
        return np.argmax(logits / temperature + gumbel, axis=-1).astype(np.int32)

    def _step(self, tokens, pos, self_kv, cross_kv, state_tree, temperature, noise, first,
              hold=None):  # fmt: skip
        xp, state = self.xp, _State.from_tree(state_tree)
        logits, self_kv = self._logits(tokens, pos, self_kv, cross_kv, state.done)
        logits = self._rules(logits, state, first)
        held_at = state.held_at
        if hold is not None:
            logits, held_at = self._refuse_end(logits, state, hold)
        chosen = self._sample(logits, temperature, noise)
        chosen_lp = xp.take_along_axis(self._log_probs(logits), chosen[:, None], axis=-1)[:, 0]
        live = ~state.done
        chosen = xp.where(live, chosen, self.eot)
        is_ts = chosen >= self.ts_begin
        new = _State.__new__(_State)
        new.sum_logprob = state.sum_logprob + xp.where(live, chosen_lp, 0.0)
        new.count = state.count + live.astype(xp.int32)
        new.penult_is_ts = xp.where(live, state.last_is_ts, state.penult_is_ts)
        new.last_is_ts = xp.where(live, is_ts, state.last_is_ts)
        new.last_ts = xp.where(live & is_ts, chosen, state.last_ts)
        new.done = state.done | (chosen == self.eot)
        new.spoke = state.spoke | (live & (chosen < self.eot))
        new.held_at = held_at
        return chosen, chosen_lp, self_kv, new.tree()

    # --- decoding a batch ------------------------------------------------------------

    def decode(
        self,
        cross_kv: list[tuple],
        prefix: list[int],
        temperature: float = 0.0,
        seed: int = 0,
        check: Callable[[], None] | None = None,
        hold: np.ndarray | None = None,
    ) -> list[RowResult]:
        """Decode every row of an encoded batch; `prefix` is the shared prompt + SOT sequence.
        `check` runs every few steps and may raise to abandon the batch (stop, cancel).
        `hold`: per row, a timestamp (in steps of TIME_PRECISION into the window) before
        which a row that has spoken may not end: it must go on with the rest of its window."""
        xp, batch = self.xp, cross_kv[0][0].shape[0]
        limit = min(self.sample_len, self.n_ctx - len(prefix))
        self_kv = self._empty_cache(batch, cross_kv, len(prefix) + limit)
        state = _State(batch, xp).tree()
        tokens = xp.array([prefix] * batch, dtype=xp.int32)
        sot_index = prefix.index(self.tokenizer.sot)
        no_speech = self._no_speech_probs(tokens, cross_kv, sot_index)

        sampled, logprobs = [], []
        if xp is mx:
            noise = mx.random.split(mx.random.key(seed), self.sample_len)
        else:
            generator = np.random.default_rng(seed)
        if hold is not None:
            hold = xp.array(np.asarray(hold, np.int32))
        pos = 0
        for i in range(limit):
            chosen, logprob, self_kv, state = self._step(
                tokens, pos, self_kv, cross_kv, state, temperature,
                noise[i] if xp is mx else generator, i == 0, hold,
            )  # fmt: skip
            pos += tokens.shape[1]
            tokens = chosen[:, None]
            sampled.append(chosen)
            logprobs.append(logprob)
            if xp is mx:  # queue the step; sync only every few steps
                mx.async_eval(chosen, logprob, state)
            every = i % SYNC_EVERY == SYNC_EVERY - 1
            if every and check is not None:
                check()
            if (every or xp is np) and bool(state[3].all()):  # NumPy's check is free
                break
        matrix = np.array(xp.stack(sampled, axis=1)) if sampled else np.zeros((batch, 0))
        lps = np.array(xp.stack(logprobs, axis=1)) if logprobs else np.zeros((batch, 0))
        sum_logprob, count, held_at = np.array(state[4]), np.array(state[5]), np.array(state[7])
        results = []
        for row in range(batch):
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

    def _empty_cache(self, batch: int, cross_kv: list[tuple], length: int) -> list[tuple]:
        """Self-attention keys/values for `length` positions (MLX's: the whole context,
        which its causal mask assumes)."""
        if self.net:
            return self.net.empty_cache(batch, length)
        heads = self.model.decoder.blocks[0].attn.n_head
        shape = (batch, heads, self.n_ctx, self.dims.n_text_state // heads)
        dtype = cross_kv[0][1].dtype
        return [(mx.zeros(shape, dtype), mx.zeros(shape, dtype)) for _ in cross_kv]

    def _no_speech_probs(self, tokens, cross_kv, sot_index) -> np.ndarray:
        """P(<|nospeech|>) right after SOT, from a short separate forward pass."""
        if self.tokenizer.no_speech is None:
            return np.full(tokens.shape[0], np.nan)
        empty = self._empty_cache(tokens.shape[0], cross_kv, sot_index + 1)
        logits, _ = self._logits(tokens[:, : sot_index + 1], 0, empty, cross_kv)
        probs = np.exp(np.array(logits - _logsumexp(self.xp, logits)))
        return probs[:, self.tokenizer.no_speech]
