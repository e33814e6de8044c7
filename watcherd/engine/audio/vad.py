"""Voice activity: silero's speech probability per 32 ms frame, and the speech regions.

silero runs with onnxruntime from the model files its package ships; the package itself
is never imported (its `__init__` imports torch, hundreds of MB for nothing).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from watcherd.engine.audio.decode import SAMPLE_RATE

VAD_FRAME = 512  # samples per silero frame (32 ms)
VAD_CONTEXT = 64


def model_path() -> Path:
    """The silero-vad package's sequence model, found without importing the package (its
    __init__ imports torch, hundreds of MB of memory for nothing)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the silero-vad package is not installed (pip install silero-vad)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder / "silero_vad_16k_sequence.onnx"


class SileroVAD:
    """Speech probability per 32 ms frame, streaming (its state carries across calls).

    Silero's sequence export runs a whole block of frames per call, with the LSTM inside
    ONNX Runtime: the same probabilities, bit for bit, as the frame-by-frame model,
    without a Python call per 32 ms frame."""

    def __init__(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(model_path()), options, providers=["CPUExecutionProvider"]
        )
        self.reset()

    def reset(self) -> None:
        self.hidden = np.zeros((1, 1, 128), np.float32)
        self.cell = np.zeros((1, 1, 128), np.float32)
        self.context = np.zeros(VAD_CONTEXT, np.float32)  # the previous frame's tail

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities for whole frames of `samples` (its length must be a frame multiple)."""
        frames = samples.reshape(-1, VAD_FRAME)
        if not len(frames):
            return np.zeros(0, np.float32)
        # Each frame goes in with the last VAD_CONTEXT samples before it.
        contexts = np.concatenate([self.context[None], frames[:-1, -VAD_CONTEXT:]])
        probs, self.hidden, self.cell = self.session.run(
            None,
            {"input": np.concatenate([contexts, frames], axis=1), "h": self.hidden,
             "c": self.cell},
        )  # fmt: skip
        self.context = frames[-1, -VAD_CONTEXT:].copy()
        return probs.astype(np.float32).reshape(-1)


@dataclass
class VadOptions:
    threshold: float = 0.5  # a frame above this starts speech
    neg_threshold: float = 0.35  # speech ends when frames fall below this
    min_speech_seconds: float = 0.25
    min_silence_seconds: float = 0.5  # shorter pauses do not end a region
    pad_seconds: float = 0.4  # kept around each region, so word edges are not clipped
    max_gap_seconds: float | None = None  # longer pauses (between padded regions) split chunks


def speech_regions(probs: np.ndarray, options: VadOptions) -> list[tuple[int, int]]:
    """(start_frame, end_frame) of each speech region, before padding."""
    regions: list[tuple[int, int]] = []
    min_silence = int(options.min_silence_seconds * SAMPLE_RATE / VAD_FRAME)
    start, silent = None, 0
    for i, p in enumerate(probs):
        if start is None:
            if p >= options.threshold:
                start, silent = i, 0
        elif p < options.neg_threshold:
            silent += 1
            if silent > min_silence:
                regions.append((start, i - silent + 1))
                start = None
        else:
            silent = 0
    if start is not None:
        regions.append((start, len(probs) - silent))
    min_frames = options.min_speech_seconds * SAMPLE_RATE / VAD_FRAME
    return [(s, e) for s, e in regions if e - s >= min_frames]
