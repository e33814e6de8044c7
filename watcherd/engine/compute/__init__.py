"""The arithmetic of a loaded model, chosen once per model (as watchdog picks its observer).

- `mlx` (`mlx.py`): MLX's own kernels. Metal on a Mac, CUDA on NVIDIA GPUs; also MLX's
  CPU device, which the tests use as the stand-in for the accelerators' code path.
- `cpu` (`cpu.py`): ONNX Runtime graphs and NumPy over the same float32 weights, where
  MLX would run on a CPU: its CPU backend's elementwise kernels are scalar and
  single-threaded, and several times slower there.

Every stage is written against `base.Compute` and never asks which one it has.
"""

from __future__ import annotations

import mlx.core as mx
from mlx_whisper.whisper import Whisper

from watcherd.engine.compute.base import Batch, Compute, Encoding, KeysValues

__all__ = ["Batch", "Compute", "Encoding", "KeysValues", "NAMES", "create", "for_model"]

NAMES = ("mlx", "cpu")


def for_model(model: Whisper) -> Compute:
    """The CPU path for float32 weights on MLX's CPU device, MLX's kernels elsewhere."""
    weight = model.decoder.token_embedding.weight
    on_cpu = mx.default_device() == mx.cpu and weight.dtype == mx.float32
    return create("cpu" if on_cpu else "mlx", model)


def create(name: str, model: Whisper) -> Compute:
    """A compute path by name, whatever the device (tests compare them side by side)."""
    if name == "cpu":
        from watcherd.engine.compute.cpu import CPUCompute

        return CPUCompute(model)
    if name == "mlx":
        from watcherd.engine.compute.mlx import MLXCompute

        return MLXCompute(model)
    raise ValueError(f"unknown compute {name!r}: choose one of {', '.join(NAMES)}")
