"""Batched greedy decoding: many 30 s chunks at once, each row with its own end-of-text
and its own timestamp tokens.

It reuses mlx-whisper's decoder weights but runs its own forward pass, shaped for speed:
- the cross-attention keys and values are projected, split into heads and scaled once
  per batch, not again on every step (mlx-whisper redoes this each step);
- the self-attention cache is preallocated to the full text context and written in place,
  so every step has the same shapes (an `mx.compile`d step measured no faster on the CPU,
  and compiling each new batch size stalled the first file for seconds, so it is not);
- Whisper's timestamp rules run vectorised on the device, with no per-row Python loop
  and no host sync per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_whisper.tokenizer import Tokenizer
from mlx_whisper.whisper import Whisper

SYNC_EVERY = 8  # steps between checks that every row has ended
TIME_PRECISION = 0.02  # seconds per timestamp token


@dataclass(frozen=True)
class RowResult:
    tokens: list[int]  # sampled tokens, without the prompt and without end-of-text
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    token_logprobs: tuple[float, ...] = ()  # one per token, for word probabilities


class _State:
    """Per-row timestamp-rule state, on the device."""

    def __init__(self, batch: int):
        # As in Whisper, a sequence shorter than two tokens counts as ending in a timestamp
        # pair, so the first timestamp is followed by text, not by a second timestamp.
        # (The first step has its own rule: it must be a timestamp.)
        self.last_is_ts = mx.ones((batch,), dtype=mx.bool_)
        self.penult_is_ts = mx.ones((batch,), dtype=mx.bool_)
        self.last_ts = mx.full((batch,), -1, dtype=mx.int32)  # last timestamp token, or -1
        self.done = mx.zeros((batch,), dtype=mx.bool_)
        self.sum_logprob = mx.zeros((batch,), dtype=mx.float32)
        self.count = mx.zeros((batch,), dtype=mx.int32)

    def tree(self) -> list[mx.array]:
        return [self.last_is_ts, self.penult_is_ts, self.last_ts, self.done,
                self.sum_logprob, self.count]  # fmt: skip

    @classmethod
    def from_tree(cls, tree: list[mx.array]) -> _State:
        state = cls.__new__(cls)
        (state.last_is_ts, state.penult_is_ts, state.last_ts, state.done,
         state.sum_logprob, state.count) = tree  # fmt: skip
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
        self.suppress = mx.array(suppress)
        blank = np.zeros(n_vocab, np.float32)
        blank[tokenizer.encode(" ") + [self.eot]] = -np.inf
        first = np.full(n_vocab, -np.inf, np.float32)  # the first token must be a timestamp
        first[self.ts_begin : self.ts_begin + self.max_initial_ts + 1] = 0.0
        self.first_mask = mx.array(blank + first)
        self.vocab_ids = mx.arange(n_vocab, dtype=mx.int32)
        # Evaluate now: a lazy array cannot be evaluated later from another thread.
        mx.eval(self.suppress, self.first_mask, self.vocab_ids)

    def _suppressed_tokens(self) -> set[int]:
        t = self.tokenizer
        tokens = set(t.non_speech_tokens)
        tokens |= {t.transcribe, t.translate, t.sot, t.sot_prev, t.sot_lm}
        if t.no_speech is not None:
            tokens.add(t.no_speech)
        return tokens

    # --- the forward pass ------------------------------------------------------------

    def cross_kv(self, audio_features: mx.array) -> list[tuple[mx.array, mx.array]]:
        """Project, split and scale the cross-attention keys/values once per batch."""
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

    def _rules(self, logits: mx.array, state: _State, first: bool) -> mx.array:
        ids, tb = self.vocab_ids[None, :], self.ts_begin
        is_ts, is_text = ids >= tb, ids < self.eot
        mask = self.suppress[None, :]
        if first:
            return logits + mask + self.first_mask[None, :]
        last, penult = state.last_is_ts[:, None], state.penult_is_ts[:, None]
        # Timestamps come in pairs: after a pair only text, after a lone one no text.
        mask = mx.where(last & penult & is_ts, -mx.inf, mask)
        mask = mx.where(last & ~penult & is_text, -mx.inf, mask)
        # Timestamps never go backwards, and each segment has a nonzero length.
        floor = mx.where(state.last_is_ts & ~state.penult_is_ts, state.last_ts, state.last_ts + 1)
        floor = mx.where(state.last_ts >= 0, floor, tb)[:, None]
        mask = mx.where(is_ts & (ids < floor), -mx.inf, mask)
        logits = logits + mask
        # If the timestamps together are likelier than any single text token, take one.
        # (Compared on raw logits: the normalising constant cancels out.)
        ts_mass = mx.logsumexp(logits[:, tb:], axis=-1, keepdims=True)
        text_best = mx.max(logits[:, :tb], axis=-1, keepdims=True)
        return mx.where((ts_mass > text_best) & (ids < tb), -mx.inf, logits)

    def _step(self, tokens, pos, self_kv, cross_kv, state_tree, temperature, key, first):
        state = _State.from_tree(state_tree)
        logits, self_kv = self._forward(tokens, pos, self_kv, cross_kv)
        logits = self._rules(logits, state, first)
        if temperature > 0:  # a Python constant: greedy and sampled steps compile apart
            chosen = mx.random.categorical(logits / temperature, key=key).astype(mx.int32)
        else:
            chosen = mx.argmax(logits, axis=-1).astype(mx.int32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        chosen_lp = mx.take_along_axis(logprobs, chosen[:, None], axis=-1)[:, 0]
        live = ~state.done
        chosen = mx.where(live, chosen, self.eot)
        is_ts = chosen >= self.ts_begin
        new = _State.__new__(_State)
        new.sum_logprob = state.sum_logprob + mx.where(live, chosen_lp, 0.0)
        new.count = state.count + live.astype(mx.int32)
        new.penult_is_ts = mx.where(live, state.last_is_ts, state.penult_is_ts)
        new.last_is_ts = mx.where(live, is_ts, state.last_is_ts)
        new.last_ts = mx.where(live & is_ts, chosen, state.last_ts)
        new.done = state.done | (chosen == self.eot)
        return chosen, chosen_lp, self_kv, new.tree()

    # --- decoding a batch ------------------------------------------------------------

    def decode(
        self,
        cross_kv: list[tuple[mx.array, mx.array]],
        prefix: list[int],
        temperature: float = 0.0,
        seed: int = 0,
        check: Callable[[], None] | None = None,
    ) -> list[RowResult]:
        """Decode every row of an encoded batch; `prefix` is the shared prompt + SOT sequence.
        `check` runs every few steps and may raise to abandon the batch (stop, cancel)."""
        batch = cross_kv[0][0].shape[0]
        heads = self.model.decoder.blocks[0].attn.n_head
        head_dim = self.dims.n_text_state // heads
        dtype = cross_kv[0][1].dtype
        shape = (batch, heads, self.n_ctx, head_dim)
        self_kv = [(mx.zeros(shape, dtype), mx.zeros(shape, dtype)) for _ in cross_kv]
        state = _State(batch).tree()
        tokens = mx.array([prefix] * batch, dtype=mx.int32)
        sot_index = prefix.index(self.tokenizer.sot)
        no_speech = self._no_speech_probs(tokens, cross_kv, sot_index)

        sampled: list[mx.array] = []
        logprobs: list[mx.array] = []
        pos = mx.array(0, dtype=mx.int32)
        keys = mx.random.split(mx.random.key(seed), self.sample_len)
        limit = min(self.sample_len, self.n_ctx - len(prefix))
        for i in range(limit):
            chosen, logprob, self_kv, state = self._step(
                tokens, pos, self_kv, cross_kv, state, temperature, keys[i], i == 0
            )
            pos = pos + tokens.shape[1]
            tokens = chosen[:, None]
            sampled.append(chosen)
            logprobs.append(logprob)
            mx.async_eval(chosen, logprob, state)
            if i % SYNC_EVERY == SYNC_EVERY - 1:
                if check is not None:
                    check()
                if bool(mx.all(state[3])):
                    break
        matrix = np.array(mx.stack(sampled, axis=1)) if sampled else np.zeros((batch, 0))
        lps = np.array(mx.stack(logprobs, axis=1)) if logprobs else np.zeros((batch, 0))
        sum_logprob, count = np.array(state[4]), np.array(state[5])
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
            ))  # fmt: skip
        return results

    def _no_speech_probs(self, tokens, cross_kv, sot_index) -> np.ndarray:
        """P(<|nospeech|>) right after SOT, from a short separate forward pass."""
        if self.tokenizer.no_speech is None:
            return np.full(tokens.shape[0], np.nan)
        heads = self.model.decoder.blocks[0].attn.n_head
        shape = (tokens.shape[0], heads, self.n_ctx, self.dims.n_text_state // heads)
        dtype = cross_kv[0][1].dtype
        empty = [(mx.zeros(shape, dtype), mx.zeros(shape, dtype)) for _ in cross_kv]
        logits, _ = self._forward(
            tokens[:, : sot_index + 1], mx.array(0, dtype=mx.int32), empty, cross_kv
        )
        return np.array(mx.softmax(logits, axis=-1)[:, self.tokenizer.no_speech])
