"""The audio encoder on the CPU: one ONNX Runtime graph over the MLX model's weights.

MLX's CPU backend runs its elementwise kernels scalar and on one thread, and NumPy makes
a pass over memory per operation: the attention softmax, GELU and layer norm would cost
a third of a window. ONNX Runtime's CPU kernels fuse and vectorise them (its multi-head
attention computes the softmax in cache), and split every operation across the cores,
so one window at a time keeps every core busy.
"""

from __future__ import annotations

import os

import numpy as np
from mlx_whisper.whisper import Whisper

from watcherd.engine.compute.graphs import Builder, Weights, tensor


class EncoderGraph:
    """(B, 3000, n_mels) log-mel windows -> (B, 1500, d) audio features, a window per run."""

    def __init__(self, model: Whisper, threads: int | None = None):
        g = Builder(Weights(model.encoder))
        n_mels = g.w["conv1.weight"].shape[-1]
        self.heads = model.encoder.blocks[0].attn.n_head
        x = g.node("Transpose", "mel", perm=[0, 2, 1])  # Conv wants (B, channels, T)
        x = _conv_gelu(g, x, "conv1", stride=1)
        x = _conv_gelu(g, x, "conv2", stride=2)
        x = g.node("Transpose", x, perm=[0, 2, 1])
        positions = np.array(model.encoder._positional_embedding, copy=False)
        x = g.node("Add", x, g.constant("positions", positions))
        # Rows of (B*T, d) between attentions: the products are then `Gemm`s, which read
        # the weights as MLX keeps them (out, in), with no transposed copies.
        shape = g.node("Shape", x)
        width = g.shape("width", [-1, positions.shape[-1]])
        x = g.node("Reshape", x, width)
        for i in range(len(model.encoder.blocks)):
            x = self._block(g, x, f"blocks.{i}", shape, width)
        features = g.node("Reshape", g.layer_norm(x, "ln_post"), shape)
        # Products by 1500 rows gain nothing from packed copies of the weights.
        self.graph = g.build(
            [tensor("mel", ["batch", "frames", n_mels])],
            {"features": (features, ["batch", "positions", positions.shape[-1]])},
            threads or os.cpu_count() or 1,
            prepack=False,
        )

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        return np.stack([self.window(w) for w in mel])

    def window(self, mel: np.ndarray) -> np.ndarray:
        """One window (3000, n_mels) -> (1500, d), spread over every core."""
        return self.graph.run(mel=np.ascontiguousarray(mel[None]))[0]

    def _block(self, g: Builder, x: str, block: str, shape: str, width: str) -> str:
        h = g.layer_norm(x, f"{block}.attn_ln")
        q, k, v = (g.node("Reshape", g.linear(h, f"{block}.attn.{name}"), shape)
                   for name in ("query", "key", "value"))  # fmt: skip
        attended = g.node("MultiHeadAttention", q, k, v, domain="com.microsoft",
                          num_heads=self.heads)  # fmt: skip
        attended = g.node("Reshape", attended, width)
        x = g.node("Add", x, g.linear(attended, f"{block}.attn.out"))
        hidden = g.linear(g.layer_norm(x, f"{block}.mlp_ln"), f"{block}.mlp1")
        hidden = g.node("Gelu", hidden, domain="com.microsoft")  # exact (erf) GELU
        return g.node("Add", x, g.linear(hidden, f"{block}.mlp2"))


def _conv_gelu(g: Builder, x: str, name: str, stride: int) -> str:
    """GELU(Conv1d(kernel 3, padding 1)) over (B, channels, T)."""
    weight = g.w[f"{name}.weight"].transpose(0, 2, 1)  # MLX: (out, kernel, in)
    bias = g.w[f"{name}.bias"][:, None]  # added over (B, out, T)
    conv = g.node("Conv", x, g.constant(f"{name}.weight", weight), kernel_shape=[3],
                  pads=[1, 1], strides=[stride])  # fmt: skip
    conv = g.node("Add", conv, g.constant(f"{name}.bias", bias))
    return g.node("Gelu", conv, domain="com.microsoft")
