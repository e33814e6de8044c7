"""The transcription engine: audio file in, `Transcript` out. Knows nothing of SQLite."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from watcherd.engine import package_init

package_init.defer()  # before the first mlx_whisper import: ~130 MB less (see the module)

from watcherd.engine import audio, lightning, models, repetition  # noqa: E402
from watcherd.engine.audio import AudioError  # noqa: E402
from watcherd.engine.models import LoadedModel, ModelError  # noqa: E402
from watcherd.engine.options import DecodeOptions  # noqa: E402
from watcherd.engine.transcript import Segment, Transcript, Word  # noqa: E402

__all__ = [
    "AudioError",
    "DecodeOptions",
    "Engine",
    "LoadedModel",
    "ModelError",
    "Segment",
    "Transcript",
    "Word",
]

BACKENDS = ("lightning", "standard")


class Engine:
    """Transcribes files with one cached model; cheap to create, the model loads once."""

    def __init__(
        self,
        model: str,
        cache_dir: Path,
        dtype: str = "auto",
        backend: str = "lightning",
        *,
        vad: bool = True,
        batch_size: int = 0,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.model_name = model
        self.cache_dir = Path(cache_dir)
        self.dtype = models.dtype_from_name(dtype)
        self.backend = backend
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
        if self.backend == "lightning":
            segments, language, probability, seconds = lightning.transcribe(
                loaded, path, options, progress, vad=self.vad, batch_size=self.batch_size or None
            )
        else:
            from watcherd.engine import standard  # imports mlx-whisper's transcribe, numba

            samples = audio.load_audio(path)
            segments, language = standard.transcribe(loaded, samples, options, progress)
            segments = repetition.cut_segment_loops(segments)
            seconds, probability = samples.size / audio.SAMPLE_RATE, None
        return Transcript(
            source=str(path),
            segments=tuple(segments),
            language=language,
            model=self.model_name,
            audio_seconds=round(seconds, 3),
            processing_seconds=round(time.perf_counter() - started, 3),
            task=options.task,
            backend=self.backend,
            language_probability=None if probability is None else round(probability, 4),
        )
