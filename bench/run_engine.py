"""One engine in its own process: load the model, warm up, transcribe the files.

    python -m bench.run_engine ENGINE MODEL MODEL_CACHE FILE...

ENGINE is a name from ENGINES, optionally with watcherd settings after a colon:
`watcherd:vad=false,batch_size=4`. Prints one JSON object: load seconds, per-file seconds
and text, and the peak RSS. Run by bench/__main__.py; a process per engine keeps the
memory figures apart.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from pathlib import Path

WARMUP = Path(__file__).resolve().parent.parent.parent / "shared" / "audio" / "jfk.flac"
DATA = Path(__file__).resolve().parent / "data"


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


def ctranslate2_folder(model: str) -> str:
    """The model in CTranslate2's own layout, for faster-whisper: the same weights the
    other engines convert. Split packages (base, small) are joined once into bench/data."""
    from watcherd.engine.model import models

    dirs = models.resolve(model)
    if len(dirs) == 1 and (dirs[0] / "model.bin").exists():
        return str(dirs[0])
    target = DATA / f"ct2-{model}"
    if not (target / "model.bin").exists():
        target.mkdir(parents=True, exist_ok=True)
        with (target / "model.bin.tmp").open("wb") as out:
            for part in (p for d in dirs for p in models.ct2.model_bin_parts(d)):
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out)
        for folder in dirs:
            for extra in folder.iterdir():
                if not extra.name.startswith("model.bin"):
                    shutil.copy(extra, target / extra.name)
        (target / "model.bin.tmp").rename(target / "model.bin")
    return str(target)


def watcherd_engine(model: str, model_cache: str, **settings):
    from watcherd.engine import Engine

    engine = Engine(model, Path(model_cache), **settings)
    engine.load()
    return lambda path: engine.transcribe(path).text


def mlx_whisper_engine(model: str, model_cache: str):
    import mlx.core as mx
    import mlx_whisper

    from watcherd.engine.audio.decode import load_audio
    from watcherd.engine.model import models

    loaded = models.load(model, Path(model_cache))  # the same converted weights

    def run(path):  # stock transcribe; PyAV decodes, since there is no ffmpeg binary here
        audio = load_audio(path)
        result = mlx_whisper.transcribe(audio, path_or_hf_repo=str(loaded.path),
                                        fp16=loaded.dtype == mx.float16)  # fmt: skip
        return result["text"]

    run(WARMUP)  # loads the model into mlx-whisper's own holder
    return run


def faster_whisper_engine(model: str, batched: bool):
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    whisper = WhisperModel(ctranslate2_folder(model), device="cpu", compute_type="int8",
                           cpu_threads=2)  # fmt: skip
    if batched:
        pipeline = BatchedInferencePipeline(whisper)
        return lambda path: " ".join(
            s.text for s in pipeline.transcribe(str(path), beam_size=1, batch_size=8)[0]
        )
    return lambda path: " ".join(s.text for s in whisper.transcribe(str(path), beam_size=1)[0])


def parse_settings(text: str) -> dict:
    """`vad=false,batch_size=4` -> {"vad": False, "batch_size": 4}."""
    settings = {}
    for pair in filter(None, text.split(",")):
        key, value = pair.split("=", 1)
        try:
            settings[key] = json.loads(value)
        except ValueError:  # a word: a string
            settings[key] = value
    return settings


def engine(spec: str, model: str, model_cache: str):
    name, _, settings = spec.partition(":")
    if name == "watcherd":
        return watcherd_engine(model, model_cache, **parse_settings(settings))
    if name == "watcherd-novad":
        return watcherd_engine(model, model_cache, vad=False)
    if name == "mlx-whisper":
        return mlx_whisper_engine(model, model_cache)
    if name in ("faster-whisper", "faster-whisper-batched"):
        return faster_whisper_engine(model, batched=name.endswith("batched"))
    raise SystemExit(f"unknown engine {spec!r}")


def main() -> None:
    spec, model, model_cache, *files = sys.argv[1:]
    started = time.perf_counter()
    transcribe = engine(spec, model, model_cache)
    load = time.perf_counter() - started
    transcribe(WARMUP)  # first-call compilation is a one-off in a resident daemon
    results = []
    for path in files:
        t = time.perf_counter()
        text = transcribe(Path(path))
        results.append({"path": path, "seconds": time.perf_counter() - t, "text": text})
    peak_mb = peak_rss_mb()
    print(json.dumps({"engine": spec, "model": model, "load_seconds": load, "files": results,
                      "peak_rss_mb": peak_mb}))  # fmt: skip


if __name__ == "__main__":
    main()
