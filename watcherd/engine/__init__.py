"""The transcription engine: audio file in, `Transcript` out. Knows nothing of SQLite.

audio/      file → 16 kHz samples → speech chunks ≤ 30 s → log-mel windows
compute/    the model's arithmetic, chosen once: MLX's kernels, or ONNX Runtime + NumPy
decoding/   batched decoding under Whisper's rules; prompt, language, segments, words
quality/    fallback, silence, skipped stretches, repetition loops
model/      find, convert (CTranslate2 → MLX) and load models, once
lightning   the batched loop that runs a file through all of it
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from watcherd.engine.model import package_init

package_init.defer()  # before the first mlx_whisper import: see the module

from watcherd.engine import lightning  # noqa: E402
from watcherd.engine.audio.decode import AudioError  # noqa: E402
from watcherd.engine.lightning import Cancelled, Checkpoint, Request  # noqa: E402
from watcherd.engine.model import models  # noqa: E402
from watcherd.engine.model.models import LoadedModel, ModelError  # noqa: E402
from watcherd.engine.options import DecodeOptions  # noqa: E402
from watcherd.transcript import Transcript  # noqa: E402

__all__ = [
    "AudioError",
    "Cancelled",
    "Checkpoint",
    "DecodeOptions",
    "Engine",
    "LoadedModel",
    "ModelError",
    "Request",
]


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

    def validate(self, options: DecodeOptions) -> None:
        """Raise ModelError for options this model cannot honour."""
        if not self.load().multilingual and options.language not in (None, "en"):
            raise ModelError(f"model {self.model_name!r} is English-only; language must be 'en'")

    def transcribe(
        self,
        path: Path | str,
        options: DecodeOptions | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> Transcript:
        """Transcribe one file. Raises AudioError for input that cannot be decoded."""
        ((_, result),) = self.stream([Request(path, options or DecodeOptions(), progress)])
        if isinstance(result, Exception):
            raise result
        return result

    def stream(
        self, requests: Iterable[Request]
    ) -> Iterator[tuple[Request, Transcript | Exception]]:
        """Transcribe files as one stream of windows (`lightning.stream`), batched across
        files; for each request, in the order they finish, its Transcript, or the error
        that ended it (AudioError, ModelError), or `Cancelled`. Every request shares the
        same decode options."""
        loaded = self.load()

        def checked() -> Iterator[Request]:
            for request in requests:
                self.validate(request.options)
                yield request

        results = lightning.stream(loaded, checked(), vad=self.vad,
                                   batch_size=self.batch_size or None)  # fmt: skip
        for result in results:
            yield result.request, self._transcript(result)

    def _transcript(self, result: lightning.Result) -> Transcript | Exception:
        if result.error is not None:
            return result.error
        if result.cancelled:
            return Cancelled(str(result.request.path))
        return Transcript(
            source=str(result.request.path),
            segments=tuple(result.segments),
            language=result.language,
            model=self.model_name,
            audio_seconds=round(result.audio_seconds, 3),
            processing_seconds=round(result.processing_seconds, 3),
            task=result.request.options.task,
            backend="lightning",
            language_probability=None
            if result.probability is None
            else round(result.probability, 4),
            windows=result.windows,
        )
