"""The `standard` backend: mlx-whisper's own sequential `transcribe`, kept for comparison.

It decodes one 30 s window at a time, conditioned on the previous text. It has no progress
callback, so its progress bar module is given a small shim that forwards frame counts.
"""

from __future__ import annotations

import importlib
import threading
import types
from collections.abc import Callable

import mlx.core as mx
import numpy as np

from watcherd.engine import package_init
from watcherd.engine.models import LoadedModel
from watcherd.engine.options import DecodeOptions
from watcherd.engine.transcript import Segment, Word

Progress = Callable[[float], None]
_local = threading.local()
package_init.complete()  # mlx-whisper's own __init__, which this backend needs
# The package re-exports a function named `transcribe` over its submodule; get the module.
mlx_transcribe = importlib.import_module("mlx_whisper.transcribe")


class _ProgressBar:
    """Stands in for tqdm.tqdm inside mlx_whisper.transcribe: reports a 0..1 fraction."""

    def __init__(self, total: int = 0, **_: object):
        self.total, self.n = max(total, 1), 0

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        self.n += n
        callback = getattr(_local, "progress", None)
        if callback is not None:
            callback(min(1.0, self.n / self.total))


mlx_transcribe.tqdm = types.SimpleNamespace(tqdm=_ProgressBar)


def transcribe(
    loaded: LoadedModel,
    samples: np.ndarray,
    options: DecodeOptions,
    progress: Progress | None = None,
) -> tuple[list[Segment], str]:
    """Run mlx-whisper's transcribe on samples with the already loaded model."""
    # mlx-whisper loads models through its own holder; hand it ours so it never reloads.
    mlx_transcribe.ModelHolder.model = loaded.model
    mlx_transcribe.ModelHolder.model_path = str(loaded.path)
    _local.progress = progress
    try:
        result = mlx_transcribe.transcribe(
            samples,
            path_or_hf_repo=str(loaded.path),
            verbose=None,
            fp16=loaded.dtype == mx.float16,
            language=options.language,
            task=options.task,
            initial_prompt=options.initial_prompt,
            word_timestamps=options.word_timestamps,
            temperature=options.temperatures,
            compression_ratio_threshold=options.compression_ratio_threshold,
            logprob_threshold=options.logprob_threshold,
            no_speech_threshold=options.no_speech_threshold,
        )
    finally:
        _local.progress = None
    return [_segment(s) for s in result["segments"] if s["text"].strip()], result["language"]


def _segment(raw: dict) -> Segment:
    words = tuple(
        Word(float(w["start"]), float(w["end"]), w["word"], float(w["probability"]))
        for w in raw.get("words") or ()
    )
    return Segment(
        start=float(raw["start"]),
        end=float(raw["end"]),
        text=raw["text"].strip(),
        words=words,
        avg_logprob=float(raw["avg_logprob"]),
        no_speech_prob=float(raw["no_speech_prob"]),
    )
