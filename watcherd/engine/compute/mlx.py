"""MLX's own kernels: Metal on a Mac, CUDA on NVIDIA GPUs, and MLX's CPU device.

The decoder's forward pass reuses mlx-whisper's weights but is shaped for batches:
- the cross-attention keys and values are projected, split into heads and scaled once
  per batch (mlx-whisper redoes this on every step);
- the self-attention cache is preallocated to the whole text context and written in
  place, so every step has the same shapes;
- work is queued with `mx.async_eval` and read back only every few steps, so the host
  builds the next step while the device runs this one.
"""

from __future__ import annotations

import os

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from watcherd.engine.compute.base import Batch, Compute, Encoding, KeysValues

SYNC_EVERY = 8  # decoder steps between reads of "has every row ended?"
GPU_MAX_BATCH = 64  # rows: a step costs about the same at 8 rows and at 64 on a GPU


class MLXEncoding(Encoding):
    """A batch is encoded when its features are asked for."""

    def __init__(self, compute: MLXCompute):
        self.compute = compute

    def batch(self) -> Batch:
        return MLXBatch(self.compute)


class MLXBatch(Batch):
    def __init__(self, compute: MLXCompute):
        self.compute = compute
        self.windows: list[mx.array] = []

    def add(self, mel) -> None:
        self.windows.append(mx.array(mel))

    def features(self) -> mx.array:
        features = self.compute.model.encoder(mx.stack(self.windows))
        mx.eval(features)
        return features


class MLXCompute(Compute):
    name = "mlx"
    xp = mx
    sync_every = SYNC_EVERY

    def __init__(self, model):
        super().__init__(model)
        self.n_ctx = model.dims.n_text_ctx
        self.on_gpu = mx.default_device() != mx.cpu
        if self.on_gpu:
            self.max_batch = GPU_MAX_BATCH
            self.spare_cores = max(1, (os.cpu_count() or 2) - 1)  # one drives the GPU
        heads = np.array(model.alignment_heads).reshape(-1, 2)
        self.alignment_heads = [(int(layer), int(head)) for layer, head in heads]

    def memory_bytes(self) -> int | None:
        """A GPU's own memory (on a Mac, the share macOS lets the GPU wire)."""
        if not self.on_gpu:
            return None
        info = mx.device_info()
        return info.get("max_recommended_working_set_size") or info.get("memory_size")

    def encoding(self) -> Encoding:
        return MLXEncoding(self)

    def cross_kv(self, features) -> KeysValues:
        features = mx.array(features)
        batch, n_audio, _ = features.shape
        result = []
        for block in self.model.decoder.blocks:
            attn = block.cross_attn
            heads = attn.n_head
            scale = (features.shape[-1] // heads) ** -0.25
            k = attn.key(features).reshape(batch, n_audio, heads, -1)
            v = attn.value(features).reshape(batch, n_audio, heads, -1)
            # Contiguous copies: a strided operand would be copied again by every matmul.
            k_t = mx.contiguous(k.transpose(0, 2, 3, 1) * scale)
            result.append((k_t, mx.contiguous(v.transpose(0, 2, 1, 3))))
        mx.eval(result)
        return result

    def empty_cache(self, batch: int, length: int) -> KeysValues:
        """The whole text context, whatever `length`: the causal mask assumes it."""
        blocks = self.model.decoder.blocks
        heads = blocks[0].attn.n_head
        shape = (batch, heads, self.n_ctx, self.dims.n_text_state // heads)
        dtype = self.model.decoder.token_embedding.weight.dtype
        return [(mx.zeros(shape, dtype), mx.zeros(shape, dtype)) for _ in blocks]

    def logits(self, tokens, pos: int, self_kv, cross_kv, done=None):
        logits, self_kv, _ = self._forward(mx.array(tokens), pos, self_kv, cross_kv)
        return logits[:, -1], self_kv

    def prefix_logits(self, tokens, self_kv, cross_kv, at: tuple):
        tokens = mx.array(tokens)
        logits, self_kv, _ = self._forward(tokens, 0, self_kv, cross_kv, at=at)
        return logits, self_kv

    def batch_size(self, rows: int) -> int:
        """On a GPU the next power of two: a compiled step is traced once per batch size,
        and a trace costs as much as hundreds of steps; padded rows cost next to nothing."""
        return 1 << (rows - 1).bit_length() if self.on_gpu else rows

    def alignment_scores(self, tokens: np.ndarray, cross_kv: KeysValues) -> np.ndarray:
        tokens = mx.array(tokens)
        cache = self.empty_cache(tokens.shape[0], tokens.shape[1])
        _, _, scores = self._forward(tokens, 0, cache, cross_kv, self.alignment_heads)
        scores = mx.concatenate(scores, axis=1).astype(mx.float32)
        return np.array(scores)

    def _attend(self, q, k_t, v, mask=None):
        """q (B,H,n,Dh) scaled, k_t (B,H,Dh,L) scaled, v (B,H,L,Dh) -> (B,n,H*Dh), and the
        scores before softmax."""
        scores = q @ k_t
        if mask is not None:
            scores = scores + mask
        weights = mx.softmax(scores, axis=-1, precise=True)
        out = (weights @ v).transpose(0, 2, 1, 3)
        return out.reshape(out.shape[0], out.shape[1], -1), scores

    def _forward(self, tokens, pos: int, self_kv, cross_kv, capture=None, at=(-1,)):
        """The decoder over `tokens` (B, n) from position `pos`: the logits at the positions
        `at` (B, len(at), vocab) and the new cache; or, given `capture` ((layer, head)
        pairs), the cross-attention scores of those heads, stopping after the last layer
        that has one."""
        decoder = self.model.decoder
        batch, n = tokens.shape
        positions = pos + mx.arange(n)
        x = decoder.token_embedding(tokens) + decoder.positional_embedding[positions]
        columns = mx.arange(self.n_ctx)
        causal = mx.where(columns[None, :] <= positions[:, None], 0.0, -mx.inf).astype(x.dtype)
        start = mx.array(pos, dtype=mx.int32).reshape(1)
        last = max(layer for layer, _ in capture) if capture else len(decoder.blocks) - 1
        new_kv, captured = [], []
        for layer, (block, (k_cache, v_cache), (ck, cv)) in enumerate(
            zip(decoder.blocks, self_kv, cross_kv, strict=True)
        ):
            attn = block.attn
            heads = attn.n_head
            h = block.attn_ln(x)
            scale = (h.shape[-1] // heads) ** -0.25
            q = attn.query(h).reshape(batch, n, heads, -1).transpose(0, 2, 1, 3) * scale
            k = attn.key(h).reshape(batch, n, heads, -1).transpose(0, 2, 1, 3) * scale
            v = attn.value(h).reshape(batch, n, heads, -1).transpose(0, 2, 1, 3)
            k_cache = mx.slice_update(k_cache, k, start, axes=(2,))
            v_cache = mx.slice_update(v_cache, v, start, axes=(2,))
            new_kv.append((k_cache, v_cache))
            out, _ = self._attend(q, k_cache.transpose(0, 1, 3, 2), v_cache, causal)
            x = x + attn.out(out)
            cross = block.cross_attn
            q = cross.query(block.cross_attn_ln(x))
            q = q.reshape(batch, n, heads, -1).transpose(0, 2, 1, 3) * scale
            out, scores = self._attend(q, ck, cv)
            if capture:
                picked = [head for at, head in capture if at == layer]
                if picked:
                    captured.append(scores[:, mx.array(picked)])
                if layer == last:
                    return None, new_kv, captured
            x = x + cross.out(out)
            x = x + block.mlp2(nn.gelu(block.mlp1(block.mlp_ln(x))))
        x = decoder.ln(x[:, list(at)])
        return decoder.token_embedding.as_linear(x).astype(mx.float32), new_kv, captured

    def log_softmax(self, logits):
        return logits - mx.logsumexp(logits, axis=-1, keepdims=True)

    def sample(self, logits, temperature: float, noise):
        if temperature == 0:
            return mx.argmax(logits, axis=-1).astype(mx.int32)
        width = logits.shape[-1]  # Gumbel-max sampling, each row with its own key
        gumbel = mx.stack([mx.random.gumbel((width,), key=key) for key in noise])
        return mx.argmax(logits / temperature + gumbel, axis=-1).astype(mx.int32)

    def noise(self, seeds: list[int], steps: int) -> list:
        keys = mx.stack([mx.random.split(mx.random.key(seed), steps) for seed in seeds], axis=1)
        return list(keys)  # per step, a key per row

    def schedule(self, *arrays) -> None:
        mx.async_eval(*arrays)

    def step(self, function):
        """Compiled: one call per step instead of building a graph of a few hundred small
        operations on the host each time (the host's work, not the device's, bounds a
        small model's step on a GPU). Traced again for each new batch size. The position
        goes in as an array, so that every step of a batch runs the same trace."""
        compiled = mx.compile(function)

        def run(tokens, pos, *rest):
            return compiled(tokens, mx.array(pos, dtype=mx.int32), *rest)

        return run

    def split(self, logits, at: int) -> tuple:
        return logits[:, :at], logits[:, at:]

    def join(self, logits, left, right):
        return mx.concatenate([left, right], axis=1)

    def add(self, x, values):
        return x + values

    def fill(self, x, mask, value: float):
        return mx.where(mask, value, x)

    def fill_rows(self, x, rows, value: float, start: int = 0, stop: int | None = None):
        columns = mx.arange(x.shape[1])
        inside = (columns >= start) & (columns < (x.shape[1] if stop is None else stop))
        return mx.where(rows[:, None] & inside[None, :], value, x)

    def logsumexp(self, x):
        return mx.logsumexp(x, axis=-1, keepdims=True)

    def to_numpy(self, x) -> np.ndarray:
        return np.array(x)
