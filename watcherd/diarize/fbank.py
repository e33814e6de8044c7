"""Kaldi's log mel filterbank, the features CAM++ was trained on, in NumPy.

The settings are Kaldi's (and torchaudio.compliance.kaldi's) defaults with 80 mel bins:
25 ms frames every 10 ms, edges snipped, DC offset removed, pre-emphasis 0.97, Povey
window, a 512-point FFT of the power spectrum, triangular filters on the mel scale from
20 Hz to Nyquist, no dither. Each stretch's features are mean-normalised over its frames,
as the model was trained.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16_000
FRAME = 400  # 25 ms
HOP = 160  # 10 ms
FFT = 512
MEL_BINS = 80
LOW_HZ = 20.0
PREEMPHASIS = 0.97
EPSILON = np.finfo(np.float32).eps


def _mel(hz):
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


@lru_cache(maxsize=1)
def _constants() -> tuple[np.ndarray, np.ndarray]:
    """The Povey window and the (257, 80) mel filter matrix."""
    n = np.arange(FRAME, dtype=np.float64)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * n / (FRAME - 1))) ** 0.85
    low, high = _mel(LOW_HZ), _mel(SAMPLE_RATE / 2)
    delta = (high - low) / (MEL_BINS + 1)
    left = low + delta * np.arange(MEL_BINS)
    center, right = left + delta, left + 2 * delta
    bins = _mel(np.arange(FFT // 2) * SAMPLE_RATE / FFT)[:, None]  # Kaldi leaves Nyquist out
    up = (bins - left) / (center - left)
    down = (right - bins) / (right - center)
    weights = np.maximum(0.0, np.minimum(up, down))
    weights = np.vstack([weights, np.zeros((1, MEL_BINS))])
    return window.astype(np.float32), weights.astype(np.float32)


def frames(num_samples: int) -> int:
    return 0 if num_samples < FRAME else 1 + (num_samples - FRAME) // HOP


def fbank(samples: np.ndarray) -> np.ndarray:
    """(frames, 80) log mel energies of 16 kHz float samples, mean-normalised."""
    count = frames(len(samples))
    if count == 0:
        return np.zeros((0, MEL_BINS), dtype=np.float32)
    window, weights = _constants()
    strided = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float32), FRAME)
    x = strided[::HOP][:count]
    x = x - x.mean(axis=1, keepdims=True)
    x = np.concatenate([x[:, :1] * (1 - PREEMPHASIS), x[:, 1:] - PREEMPHASIS * x[:, :-1]], 1)
    spectrum = np.fft.rfft(x * window, n=FFT)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    features = np.log(np.maximum(power @ weights, EPSILON))
    return features - features.mean(axis=0, keepdims=True)
