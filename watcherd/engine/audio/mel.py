"""What the encoder reads: the log-mel spectrogram of one chunk, padded to a 30 s window."""

from __future__ import annotations

import mlx.core as mx
from mlx_whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram

from watcherd.engine.audio.chunks import Chunk


def window(chunk: Chunk, n_mels: int) -> mx.array:
    """(3000, n_mels): the chunk's first 30 s, padded with silence."""
    samples = mx.array(chunk.samples[:N_SAMPLES])
    mel = log_mel_spectrogram(samples, n_mels=n_mels, padding=N_SAMPLES - samples.size)
    return mel[:N_FRAMES]
