"""The transcription engine: audio file in, `Transcript` out. Knows nothing of SQLite.

audio/      file → 16 kHz samples → speech chunks ≤ 30 s → log-mel windows
compute/    the model's arithmetic, chosen once: MLX's kernels, or ONNX Runtime + NumPy
decoding/   batched decoding under Whisper's rules; prompt, language, segments, words
quality/    fallback, silence, skipped stretches, repetition loops
model/      find, convert (CTranslate2 → MLX) and load models, once
lightning   the batched loop that runs a file through all of it
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from watcherd.engine.model import package_init

package_init.defer()  # before the first mlx_whisper import: see the module

from watcherd.engine import lightning  # noqa: E402
from watcherd.engine.audio.decode import AudioError  # noqa: E402
from watcherd.engine.model import models  # noqa: E402
from watcherd.engine.model.models import LoadedModel, ModelError  # noqa: E402
from watcherd.engine.options import DecodeOptions  # noqa: E402
from watcherd.transcript import Transcript  # noqa: E402

__all__ = ["AudioError", "DecodeOptions", "Engine", "LoadedModel", "ModelError"]


class Engine:
    """Transcribes files with one cached model; cheap to create, the model loads once."""

    def __init__(
        self,
        model: str,
        cache_dir: Path,
        dtype: str = "auto",
        *,
        vad: bool = True,
        batch_size: int = 0,
    ):
        self.model_name = model
        self.cache_dir = Path(cache_dir)
        self.dtype = models.dtype_from_name(dtype)
        self.vad = vad
        self.batch_size = batch_size

    def load(self) -> LoadedModel:
        return models.get(self.model_name, self.cache_dir, self.dtype)

    def transcribe(
        self,
        path: Path | str,
        options: DecodeOptions | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> Transcript:
        """Transcribe one file. Raises AudioError for input that cannot be decoded."""
        options = options or DecodeOptions()
        loaded = self.load()
        if not loaded.multilingual and options.language not in (None, "en"):
            raise ModelError(f"model {self.model_name!r} is English-only; language must be 'en'")
        started = time.perf_counter()
        segments, language, probability, seconds = lightning.transcribe(
            loaded, path, options, progress, vad=self.vad, batch_size=self.batch_size or None
        )
        return Transcript(
            source=str(path),
            segments=tuple(segments),
            language=language,
            model=self.model_name,
            audio_seconds=round(seconds, 3),
            processing_seconds=round(time.perf_counter() - started, 3),
            task=options.task,
            backend="lightning",
            language_probability=None if probability is None else round(probability, 4),
        )
