"""Whisper on a CPU: ONNX Runtime graphs, and NumPy for the decoder's attention.

MLX's CPU backend runs its elementwise kernels scalar and on one thread, and loops BLAS
`gemm` calls with packing for the decoder's small batched products. Here, on the same
float32 weights (views of the MLX arrays):
- the encoder is one ONNX Runtime graph (`encoder_graph`), a window at a time across
  every core, encoding ahead of the decoder in a thread (`cpu_encoding`);
- the decoder's attention runs in NumPy: the cached keys and values are read through
  `gemv`-shaped products, only up to the positions decoded so far, and only for the
  rows that have not ended;
- everything else in a decoder layer (layer norms, products, GELU, residuals) runs as
  three small ONNX Runtime graphs (`graphs`), whose products use weights packed once:
  OpenBLAS repacks a weight on every call, which dominates at a few rows, and NumPy
  makes a call and a pass over memory per operation;
- the logit rules change the logits in place (see `decoding.rules`).
"""

from __future__ import annotations

import os
from functools import cached_property

import numpy as np
from mlx_whisper.whisper import Whisper

from watcherd.engine.compute.base import Compute, Encoding, KeysValues
from watcherd.engine.compute.graphs import Builder, Graph, Weights, tensor


def softmax_(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in place."""
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def _heads(x: np.ndarray, heads: int) -> np.ndarray:
    """(B, n, D) -> (B, H, n, D/H)."""
    return x.reshape(*x.shape[:2], heads, -1).transpose(0, 2, 1, 3)


def _merge(x: np.ndarray) -> np.ndarray:
    """(B, H, n, Dh) -> (B, n, H*Dh)."""
    return x.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)


def _cross_attention(q, k_t, v, rows, keep: list[int] | None = None):
    """softmax(q k_t) v, where row j of q attends to row rows[j] of the batch's keys and
    values (a gemv-shaped product per row and head: no gathering of the keys); and the
    scores before softmax of the heads in `keep`, if any."""
    scores = np.stack([q[j] @ k_t[r] for j, r in enumerate(rows)])
    kept = scores[:, keep].copy() if keep else None
    softmax_(scores)
    return np.stack([scores[j] @ v[r] for j, r in enumerate(rows)]), kept


class CPUCompute(Compute):
    name = "cpu"
    xp = np
    int8_vocabulary = True  # see `_unembed_graph`

    def __init__(self, model: Whisper):
        super().__init__(model)
        self.w = Weights(model.decoder)
        self.n_layer = len(model.decoder.blocks)
        self.heads = model.decoder.blocks[0].attn.n_head
        self.embedding = self.w["token_embedding.weight"]
        self.positions = self.w["positional_embedding"]
        self.layers = [self._layer_graphs(f"blocks.{i}") for i in range(self.n_layer)]
        self.unembed = self._unembed_graph()
        self.log_softmax_graph = self._log_softmax_graph()
        alignment = np.array(model.alignment_heads).reshape(-1, 2)
        self.alignment_heads = [(int(layer), int(head)) for layer, head in alignment]

    # --- the encoder -----------------------------------------------------------------

    @cached_property
    def encoder_graphs(self):
        """The encoder graph across every core, and on one core (beside a busy caller)."""
        from watcherd.engine.compute.encoder_graph import EncoderGraph

        return EncoderGraph(self.model), EncoderGraph(self.model, threads=1)

    def encoding(self) -> Encoding:
        from watcherd.engine.compute.cpu_encoding import CPUEncoding

        return CPUEncoding(*self.encoder_graphs)

    # --- the decoder's graphs --------------------------------------------------------

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
        the step's largest product (for tiny, two thirds of the bytes a step reads), on
        every core; with int8 weights where `int8_vocabulary`."""
        vocabulary, width = self.embedding.shape
        g = Builder(self.w)
        h = g.layer_norm("x", "ln")
        if self.int8_vocabulary:
            logits = g.int8_product(h, "token_embedding", self.embedding)
        else:
            embedding = g.constant("token_embedding.weight", self.embedding)
            logits = g.node("Gemm", h, embedding, transB=1)
        return g.build([tensor("x", ["n", width])], {"logits": (logits, ["n", vocabulary])},
                       threads=os.cpu_count() or 1)  # fmt: skip

    def _log_softmax_graph(self) -> Graph:
        """Log-probabilities from logits: NumPy's float32 `exp` is not vectorised on every
        CPU, ONNX Runtime's is."""
        g = Builder(self.w)
        rows = ["n", self.embedding.shape[0]]
        return g.build([tensor("x", rows)], {"y": (g.node("LogSoftmax", "x", axis=-1), rows)})

    # --- the decoder -----------------------------------------------------------------

    @cached_property
    def cross_kv_graph(self) -> Graph:
        """A window's cross-attention keys and values, every layer's, in their layouts:
        keys (H, Dh, T) scaled, values (H, T, Dh); one graph on every core."""
        width, frames = self.embedding.shape[1], self.dims.n_audio_ctx
        size = width // self.heads
        g = Builder(self.w)
        heads = g.shape("heads", [frames, self.heads, size])
        outputs = {}
        for i in range(self.n_layer):
            name = f"blocks.{i}.cross_attn"
            k = g.scaled(g.linear("features", f"{name}.key"), size**-0.25)
            k = g.node("Transpose", g.node("Reshape", k, heads), perm=[1, 2, 0])
            v = g.node("Reshape", g.linear("features", f"{name}.value"), heads)
            outputs[f"k{i}"] = (k, [self.heads, size, frames])
            outputs[f"v{i}"] = (g.node("Transpose", v, perm=[1, 0, 2]), [self.heads, frames, size])
        return g.build([tensor("features", [frames, width])], outputs,
                       threads=os.cpu_count() or 1, prepack=False)  # fmt: skip

    def cross_kv(self, features) -> KeysValues:
        """Window by window, into the batch's arrays: the whole batch's intermediates at
        once would add to the peak for nothing."""
        features = np.asarray(features)
        batch, frames, width = features.shape
        size = width // self.heads
        result = [(np.empty((batch, self.heads, size, frames), np.float32),
                   np.empty((batch, self.heads, frames, size), np.float32))
                  for _ in range(self.n_layer)]  # fmt: skip
        for b in range(batch):
            out = self.cross_kv_graph.run(features=np.ascontiguousarray(features[b]))
            for i, (k_t, v) in enumerate(result):
                k_t[b], v[b] = out[2 * i], out[2 * i + 1]
        return result

    def empty_cache(self, batch: int, length: int) -> KeysValues:
        size = self.embedding.shape[1] // self.heads
        shape = (batch, self.heads, length, size)
        return [(np.zeros(shape, np.float32), np.zeros(shape, np.float32))
                for _ in range(self.n_layer)]  # fmt: skip

    def logits(self, tokens, pos: int, self_kv, cross_kv, done=None):
        """The caches are written in place. A batch's rows end at different steps, and an
        ended row would still cost its share of every product and its cross-attention
        (the step's largest memory read): only the live rows are computed, the others
        get zeros."""
        tokens = np.asarray(tokens)
        batch = tokens.shape[0]
        rows = np.arange(batch) if done is None else np.flatnonzero(~np.asarray(done))
        if not rows.size:
            return np.zeros((batch, self.embedding.shape[0]), np.float32), self_kv
        logits = self._unembed(tokens, pos, self_kv, cross_kv, rows, (-1,))[:, 0]
        if rows.size == batch:
            return logits, self_kv
        full = np.zeros((batch, logits.shape[-1]), np.float32)
        full[rows] = logits
        return full, self_kv

    def prefix_logits(self, tokens, self_kv, cross_kv, at: tuple):
        tokens = np.asarray(tokens)
        rows = np.arange(tokens.shape[0])
        return self._unembed(tokens, 0, self_kv, cross_kv, rows, at), self_kv

    def _unembed(self, tokens, pos, self_kv, cross_kv, rows, at) -> np.ndarray:
        """Logits (rows, len(at), vocab) at the positions `at` of `tokens`."""
        x, _ = self._forward(tokens, pos, self_kv, cross_kv, rows)
        width = self.embedding.shape[1]
        picked = x.reshape(rows.size, tokens.shape[1], width)[:, list(at)]
        logits = self.unembed.run(x=np.ascontiguousarray(picked.reshape(-1, width)))
        return logits.reshape(rows.size, len(at), -1)

    def alignment_scores(self, tokens: np.ndarray, cross_kv: KeysValues) -> np.ndarray:
        tokens = np.asarray(tokens)
        cache = self.empty_cache(tokens.shape[0], tokens.shape[1])
        rows = np.arange(tokens.shape[0])
        _, captured = self._forward(tokens, 0, cache, cross_kv, rows, self.alignment_heads)
        return np.concatenate(captured, axis=1)

    def _forward(self, tokens, pos, self_kv, cross_kv, rows, capture=None):
        """The decoder's layers over `tokens` (B, n) from `pos`, for the batch rows `rows`:
        the last layer's output (rows * n, d); or, given `capture` ((layer, head) pairs),
        the cross-attention scores of those heads, stopping after the last such layer."""
        n, width = tokens.shape[1], self.embedding.shape[1]
        x = self.embedding[tokens[rows]] + self.positions[pos : pos + n]
        x = x.reshape(-1, width)  # (rows * n, d): the graphs take rows
        end = pos + n
        causal = None
        if n > 1:
            query_pos, key_pos = np.arange(pos, end)[:, None], np.arange(end)[None, :]
            causal = np.where(key_pos <= query_pos, 0.0, -np.inf).astype(np.float32)
        every = rows.size == tokens.shape[0]  # all rows: the caches' own views, no gathering
        last = max(layer for layer, _ in capture) if capture else self.n_layer - 1
        captured = []

        def heads(y: np.ndarray) -> np.ndarray:
            return _heads(y.reshape(rows.size, n, width), self.heads)

        def merged(y: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(_merge(y).reshape(-1, width))

        layers = zip(self_kv, cross_kv, self.layers, strict=True)
        for layer, ((k_cache, v_cache), (k_t, v), (before, between, after)) in enumerate(layers):
            q, k, value = before.run(x=x)
            k_cache[rows, :, pos:end] = heads(k)
            v_cache[rows, :, pos:end] = heads(value)
            keys = k_cache[:, :, :end] if every else k_cache[rows, :, :end]
            values = v_cache[:, :, :end] if every else v_cache[rows, :, :end]
            scores = heads(q) @ keys.transpose(0, 1, 3, 2)
            if causal is not None:
                scores += causal
            x, q = between.run(x=x, attended=merged(softmax_(scores) @ values))
            keep = [head for at, head in capture or () if at == layer]
            attended, kept = _cross_attention(heads(q), k_t, v, rows, keep)
            if kept is not None:
                captured.append(kept)
            if capture and layer == last:
                break
            x = after.run(x=x, attended=merged(attended))
        return x, captured

    def log_softmax(self, logits):
        return self.log_softmax_graph.run(x=logits)

    # --- choosing tokens -------------------------------------------------------------

    def sample(self, logits, temperature: float, noise):
        if temperature == 0:
            return np.argmax(logits, axis=-1).astype(np.int32)
        width = logits.shape[-1]  # Gumbel-max sampling, each row with its own generator
        gumbel = np.stack([generator.gumbel(size=width) for generator in noise])
        return np.argmax(logits / temperature + gumbel.astype(np.float32), axis=-1).astype(np.int32)

    def noise(self, seeds: list[int], steps: int) -> list:
        generators = [np.random.default_rng(seed) for seed in seeds]
        return [generators] * steps

    # --- the logit rules' operations, in place: a fresh logits array each step --------

    def split(self, logits, at: int) -> tuple:
        return logits[:, :at], logits[:, at:]  # views

    def join(self, logits, left, right):
        return logits  # the views were changed in place

    def add(self, x, values):
        x += values
        return x

    def fill(self, x, mask, value: float):
        x[mask] = value
        return x

    def fill_rows(self, x, rows, value: float, start: int = 0, stop: int | None = None):
        x[rows, start:stop] = value  # only the rows it applies to are touched
        return x

    def logsumexp(self, x):
        top = x.max(axis=-1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            return top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True))
