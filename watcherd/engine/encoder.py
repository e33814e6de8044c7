"""The audio encoder: MLX's own on Metal and CUDA, NumPy's on the CPU (see `cpu`)."""

from __future__ import annotations

import os
from collections.abc import Callable

import mlx.core as mx
import numpy as np
from mlx_whisper.whisper import Whisper

from watcherd.engine import cpu

_numpy_encoders: dict[int, cpu.Encoder] = {}


def _numpy_encoder(model: Whisper) -> cpu.Encoder:
    key = id(model)
    if key not in _numpy_encoders:
        _numpy_encoders[key] = cpu.Encoder(model)
    return _numpy_encoders[key]


def encode(model: Whisper, mel: mx.array, check: Callable[[], None] | None = None) -> mx.array:
    """Encode a batch of mel windows (B, 3000, n_mels) into audio features (B, 1500, d).
    `check` runs between sub-batches and may raise to abandon the work (stop, cancel)."""
    if not cpu.use_numpy(model):
        features = model.encoder(mel)
        mx.eval(features)
        return features
    net, step = _numpy_encoder(model), os.cpu_count() or 1  # one window per core at a time
    parts = []
    for i in range(0, mel.shape[0], step):
        if check is not None:
            check()
        parts.append(net(np.array(mel[i : i + step])))
    return mx.array(np.concatenate(parts))
