"""Whisper's decoder on the CPU: NumPy for attention, ONNX Runtime graphs for the rest.

MLX's CPU backend runs its elementwise kernels scalar and single-threaded (its `exp` is
~15x slower than NumPy's), and loops BLAS `gemm` calls with packing for the decoder's
small batched products: a decoder step at batch 8 took ~70 ms on a 2-core x86 machine.
Here, on the same float32 weights (views of the MLX arrays):
- attention runs in NumPy: the cached keys/values are read through `gemv`-shaped
  products, only up to the positions decoded so far, and only for the rows that have
  not ended;
- everything else in a layer (layer norms, products, GELU, residuals) runs as three small
  ONNX Runtime graphs (`graphs`), whose products use weights packed once: OpenBLAS
  repacks the weight on every call and is 5x slower at 2-7 rows, and NumPy makes a call
  and a pass over memory per operation. Same float32 arithmetic, within 1e-4.
Measured: ~16 ms per step at batch 8, ~6.5 ms at batch 1. The encoder is one graph
(`encoder_graph`). On Metal and CUDA, MLX's own kernels run instead (see `use_cpu_path`).
"""

from __future__ import annotations

import os
import weakref

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from mlx_whisper.whisper import Whisper

from watcherd.engine.graphs import Builder, Graph, tensor

_nets: dict[tuple, object] = {}


def shared(kind: type, model: Whisper, *args):
    """One encoder graph or `Decoder` per model (and `args`): made once (the decoder's
    packed weights, however many languages and tasks decode with it), and gone when the
    model goes."""
    key = (id(model), kind, *args)
    if key not in _nets:
        _nets[key] = kind(model, *args)
        weakref.finalize(model, _nets.pop, key, None)
    return _nets[key]


def use_cpu_path(model: Whisper) -> bool:
    """The CPU path (the encoder graph, this decoder) for float32 weights on MLX's CPU
    device; MLX's own kernels elsewhere."""
    weight = model.decoder.token_embedding.weight
    return mx.default_device() == mx.cpu and weight.dtype == mx.float32


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
        self.layers = [self._layer_graphs(f"blocks.{i}") for i in range(self.n_layer)]
        self.unembed = self._unembed_graph()
        self.log_softmax = self._log_softmax_graph()

    def _layer_graphs(self, block: str) -> tuple[Graph, Graph, Graph]:
        """A layer's work around its two attentions, on rows x (n, d): before the
        self-attention (its queries, keys, values), between the attentions (the output
        projection and the cross-attention's queries), after them (the MLP)."""
        width = self.embedding.shape[1]
        rows = ["n", width]
        scale = (width // self.heads) ** -0.25  # on queries and keys both, as Whisper
        g = Builder(self.w)
        h = g.layer_norm("x", f"{block}.attn_ln")
        q = g.scaled(g.linear(h, f"{block}.attn.query"), scale)
        k = g.scaled(g.linear(h, f"{block}.attn.key"), scale)
        v = g.linear(h, f"{block}.attn.value")
        before = g.build([tensor("x", rows)], {"q": (q, rows), "k": (k, rows), "v": (v, rows)})
        g = Builder(self.w)
        x = g.node("Add", "x", g.linear("attended", f"{block}.attn.out"))
        q = g.linear(g.layer_norm(x, f"{block}.cross_attn_ln"), f"{block}.cross_attn.query")
        between = g.build([tensor("x", rows), tensor("attended", rows)],
                          {"y": (x, rows), "q": (g.scaled(q, scale), rows)})  # fmt: skip
        g = Builder(self.w)
        x = g.node("Add", "x", g.linear("attended", f"{block}.cross_attn.out"))
        hidden = g.linear(g.layer_norm(x, f"{block}.mlp_ln"), f"{block}.mlp1")
        hidden = g.node("Gelu", hidden, domain="com.microsoft")  # exact (erf) GELU
        x = g.node("Add", x, g.linear(hidden, f"{block}.mlp2"))
        after = g.build([tensor("x", rows), tensor("attended", rows)], {"y": (x, rows)})
        return before, between, after

    def _unembed_graph(self) -> Graph:
        """Logits from the last rows: the final layer norm and the vocabulary projection,
        the step's largest product, on every core."""
        vocabulary, width = self.embedding.shape
        g = Builder(self.w)
        embedding = g.constant("token_embedding.weight", self.embedding)
        logits = g.node("Gemm", g.layer_norm("x", "ln"), embedding, transB=1)
        return g.build([tensor("x", ["n", width])], {"logits": (logits, ["n", vocabulary])},
                       threads=os.cpu_count() or 1)  # fmt: skip

    def _log_softmax_graph(self) -> Graph:
        """Log-probabilities from logits. NumPy's float32 exp is not vectorised here: its
        log-softmax of (8, 51864) logits took 0.8 ms a step, ONNX Runtime's takes 0.3."""
        g = Builder(self.w)
        rows = ["n", self.embedding.shape[0]]
        return g.build([tensor("x", rows)], {"y": (g.node("LogSoftmax", "x", axis=-1), rows)})

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
        n, width = tokens.shape[1], self.embedding.shape[1]
        x = self.embedding[tokens[rows]] + self.positions[pos : pos + n]
        x = x.reshape(-1, width)  # (rows * n, d): the graphs take rows
        end = pos + n
        causal = None
        if n > 1:
            query_pos, key_pos = np.arange(pos, end)[:, None], np.arange(end)[None, :]
            causal = np.where(key_pos <= query_pos, 0.0, -np.inf).astype(np.float32)
        every = rows.size == batch  # all rows: the caches' own views, no gathering

        def heads(y: np.ndarray) -> np.ndarray:
            return _heads(y.reshape(rows.size, n, width), self.heads)

        def merged(y: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(_merge(y).reshape(-1, width))

        layers = zip(self_kv, cross_kv, self.layers, strict=True)
        for (k_cache, v_cache), (k_t, v), (before, between, after) in layers:
            q, k, value = before.run(x=x)
            k_cache[rows, :, pos:end] = heads(k)
            v_cache[rows, :, pos:end] = heads(value)
            keys = k_cache[:, :, :end] if every else k_cache[rows, :, :end]
            values = v_cache[:, :, :end] if every else v_cache[rows, :, :end]
            scores = heads(q) @ keys.transpose(0, 1, 3, 2)
            if causal is not None:
                scores += causal
            x, q = between.run(x=x, attended=merged(softmax_(scores) @ values))
            x = after.run(x=x, attended=merged(_cross_attention(heads(q), k_t, v, rows)))
        logits = self.unembed.run(x=np.ascontiguousarray(x.reshape(rows.size, n, width)[:, -1]))
        if every:
            return logits
        full = np.zeros((batch, logits.shape[-1]), np.float32)
        full[rows] = logits
        return full
