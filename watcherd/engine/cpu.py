"""Whisper's decoder in NumPy, for the CPU (the encoder is a graph: `encoder_graph`).

MLX's CPU backend runs its elementwise kernels scalar and single-threaded (its `exp` is
~15x slower than NumPy's), and loops BLAS `gemm` calls with packing for the decoder's
small batched products: a decoder step at batch 8 took ~70 ms on a 2-core x86 machine.
The same arithmetic in NumPy, on the same float32 weights (zero-copy views of the MLX
arrays): the decoder reads its cached keys/values through `gemv`-shaped products,
attends only to the positions decoded so far, computes only the rows that have not
ended, and multiplies by its weights through MLAS with the weights packed once
(`prepacked`). Measured: ~20 ms per step at batch 8, outputs within 1e-4 of MLX's. On
Metal and CUDA, MLX's own kernels run instead (see `use_numpy`).
"""

from __future__ import annotations

import os
import weakref

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from mlx_whisper.whisper import Whisper

from watcherd.engine import prepacked

# erf(x) ~= x * P(x^2) / Q(x^2) on [-4, 4] (float32 minimax coefficients, as XLA/Eigen).
ERF_P = (
    -2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
    -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
    -1.60960333262415e-02,
)  # fmt: skip
ERF_Q = (
    -1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
    -7.37332916720468e-03, -1.42647390514189e-02,
)  # fmt: skip
ROWS_IN_CACHE = 128  # rows per elementwise block: (128, 1536) float32 fits in L2
STEP_LINEARS = {"query", "key", "value", "out", "mlp1", "mlp2"}


_nets: dict[tuple[int, type], object] = {}


def shared(kind: type, model: Whisper):
    """One encoder graph or `Decoder` per model: made once (the decoder's packed weights,
    however many languages and tasks decode with it), and gone when the model goes."""
    key = (id(model), kind)
    if key not in _nets:
        _nets[key] = kind(model)
        weakref.finalize(model, _nets.pop, key, None)
    return _nets[key]


def use_numpy(model: Whisper) -> bool:
    """NumPy paths for float32 weights on MLX's CPU device; MLX kernels elsewhere."""
    weight = model.decoder.token_embedding.weight
    return mx.default_device() == mx.cpu and weight.dtype == mx.float32


def gelu_(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU in place, in row blocks that stay in cache."""
    rows = x.reshape(-1, x.shape[-1])
    for i in range(0, rows.shape[0], ROWS_IN_CACHE):
        v = rows[i : i + ROWS_IN_CACHE]
        z = v * np.float32(0.7071067811865476)
        np.clip(z, -4.0, 4.0, out=z)
        z2 = z * z
        p = np.full_like(z2, ERF_P[0])
        for c in ERF_P[1:]:
            p *= z2
            p += np.float32(c)
        q = np.full_like(z2, ERF_Q[0])
        for c in ERF_Q[1:]:
            q *= z2
            q += np.float32(c)
        p *= z
        p /= q
        p += 1.0
        p *= 0.5
        v *= p
    return x


def softmax_(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in place."""
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


class Weights:
    """NumPy views (no copies) of an MLX module's float32 parameters, by dotted name."""

    def __init__(self, module, eps: float = 1e-5):
        parameters = tree_flatten(module.parameters())
        self.arrays = {name: np.array(a, copy=False) for name, a in parameters}
        self.eps = eps

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def linear(self, x: np.ndarray, name: str) -> np.ndarray:
        weight = self.arrays[name + ".weight"]
        # One 2-D product (a stacked one would loop over the batch), by a transposed
        # view of the weight, which BLAS reads as it is.
        y = x.reshape(-1, x.shape[-1]) @ weight.T
        bias = self.arrays.get(name + ".bias")
        if bias is not None:
            y += bias
        return y.reshape(*x.shape[:-1], weight.shape[0])

    def layer_norm(self, x: np.ndarray, name: str) -> np.ndarray:
        centred = x - x.mean(axis=-1, keepdims=True)
        variance = np.einsum("...i,...i->...", centred, centred)[..., None] / x.shape[-1]
        centred *= 1.0 / np.sqrt(variance + self.eps)
        centred *= self.arrays[name + ".weight"]
        centred += self.arrays[name + ".bias"]
        return centred


def _heads(x: np.ndarray, heads: int) -> np.ndarray:
    """(B, n, D) -> (B, H, n, D/H)."""
    return x.reshape(*x.shape[:2], heads, -1).transpose(0, 2, 1, 3)


def _merge(x: np.ndarray) -> np.ndarray:
    """(B, H, n, Dh) -> (B, n, H*Dh)."""
    return x.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)


def _cross_attention(q: np.ndarray, k_t: np.ndarray, v: np.ndarray, rows) -> np.ndarray:
    """softmax(q k_t) v, where row j of q attends to row rows[j] of the batch's keys and
    values (a gemv-shaped product per row and head: no gathering of the keys)."""
    scores = softmax_(np.stack([q[j] @ k_t[r] for j, r in enumerate(rows)]))
    return np.stack([scores[j] @ v[r] for j, r in enumerate(rows)])


class Decoder:
    """The text decoder: cross keys/values once per batch, then one step at a time."""

    def __init__(self, model: Whisper):
        self.w = Weights(model.decoder)
        self.n_layer = len(model.decoder.blocks)
        self.heads = model.decoder.blocks[0].attn.n_head
        self.embedding = self.w["token_embedding.weight"]
        self.positions = self.w["positional_embedding"]
        # A step's products (a few rows by each weight) through MLAS, weights packed once;
        # the cross-attention keys/values (once per batch, 12,000 rows) stay with BLAS.
        self.products = {
            name: prepacked.Linear(self.w[f"{name}.weight"], self.w.arrays.get(f"{name}.bias"))
            for name in _step_linears(self.w)
        }
        # The vocabulary projection, the largest, on every core.
        self.unembed = prepacked.Linear(self.embedding, threads=os.cpu_count() or 1)

    def cross_kv(self, features: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per layer: keys (B, H, Dh, T) and values (B, H, T, Dh), split and scaled once.
        Written a row at a time straight into their layout: the whole batch's projections
        and their transposed copies would add ~36 MB to the peak (tiny, batch 8)."""
        batch, frames, width = features.shape
        size = width // self.heads
        scale = np.float32(size**-0.25)
        result = []
        for i in range(self.n_layer):
            name = f"blocks.{i}.cross_attn"
            k_t = np.empty((batch, self.heads, size, frames), np.float32)
            v = np.empty((batch, self.heads, frames, size), np.float32)
            keys = self.w[f"{name}.key.weight"]
            for b in range(batch):
                # (d, d) @ (d, T): the keys (no bias in Whisper) come out transposed, as
                # the heads want them.
                np.matmul(keys, features[b].T, out=k_t[b].reshape(width, frames))
                v[b] = _heads(self.w.linear(features[b : b + 1], f"{name}.value"), self.heads)[0]
            k_t *= scale
            result.append((k_t, v))
        return result

    def empty_cache(self, batch: int, n_ctx: int) -> list[tuple[np.ndarray, np.ndarray]]:
        size = self.embedding.shape[1] // self.heads
        shape = (batch, self.heads, n_ctx, size)
        return [(np.zeros(shape, np.float32), np.zeros(shape, np.float32))
                for _ in range(self.n_layer)]  # fmt: skip

    def logits(self, tokens: np.ndarray, pos: int, self_kv, cross_kv, live=None) -> np.ndarray:
        """Logits (B, vocab) after `tokens` (B, n) at position `pos`; the self-attention
        caches are written in place. Only the rows in `live` (indices; all if None) are
        computed: the others have ended, and get zeros. A batch's rows end at different
        steps (a third of the row-steps of a 9-minute file come after a row's end), and
        an ended row would still cost its share of every product, and its cross-attention
        (the step's largest memory read, 18 MB per row for tiny)."""
        batch = tokens.shape[0]
        rows = np.arange(batch) if live is None else np.asarray(live)
        if not rows.size:
            return np.zeros((batch, self.embedding.shape[0]), np.float32)
        w = self.w
        n = tokens.shape[1]
        x = self.embedding[tokens[rows]] + self.positions[pos : pos + n]
        end = pos + n
        causal = None
        if n > 1:
            query_pos, key_pos = np.arange(pos, end)[:, None], np.arange(end)[None, :]
            causal = np.where(key_pos <= query_pos, 0.0, -np.inf).astype(np.float32)
        scale = np.float32((x.shape[-1] // self.heads) ** -0.25)
        every = rows.size == batch  # all rows: the caches' own views, no gathering
        for i, ((k_cache, v_cache), (k_t, v)) in enumerate(zip(self_kv, cross_kv, strict=True)):
            block = f"blocks.{i}"
            h = w.layer_norm(x, f"{block}.attn_ln")
            q = _heads(self._linear(h, f"{block}.attn.query"), self.heads) * scale
            k = _heads(self._linear(h, f"{block}.attn.key"), self.heads)
            k_cache[rows, :, pos:end] = k * scale
            v_cache[rows, :, pos:end] = _heads(self._linear(h, f"{block}.attn.value"), self.heads)
            keys = k_cache[:, :, :end] if every else k_cache[rows, :, :end]
            values = v_cache[:, :, :end] if every else v_cache[rows, :, :end]
            scores = q @ keys.transpose(0, 1, 3, 2)
            if causal is not None:
                scores += causal
            x += self._linear(_merge(softmax_(scores) @ values), f"{block}.attn.out")
            h = w.layer_norm(x, f"{block}.cross_attn_ln")
            q = _heads(self._linear(h, f"{block}.cross_attn.query"), self.heads) * scale
            x += self._linear(_merge(_cross_attention(q, k_t, v, rows)), f"{block}.cross_attn.out")
            hidden = self._linear(w.layer_norm(x, f"{block}.mlp_ln"), f"{block}.mlp1")
            x += self._linear(gelu_(hidden), f"{block}.mlp2")
        logits = self.unembed(w.layer_norm(x[:, -1], "ln"))
        if every:
            return logits
        full = np.zeros((batch, logits.shape[-1]), np.float32)
        full[rows] = logits
        return full

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return self.products[name](x)


def _step_linears(w: Weights) -> list[str]:
    """The decoder's linear layers that run on every step (all but the cross-attention
    keys and values)."""
    names = [n.removesuffix(".weight") for n in w.arrays if n.endswith(".weight")]
    once = ("cross_attn.key", "cross_attn.value")
    return [n for n in names if n.split(".")[-1] in STEP_LINEARS and not n.endswith(once)]
