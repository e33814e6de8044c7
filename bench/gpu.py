"""The benchmark on an accelerator: watcherd against stock mlx-whisper, same GPU, same run.

    python -m bench.gpu [--minutes 60] [--out DIR]

Made for the lent NVIDIA machine (MLX's CUDA backend runs the code path a Mac's Metal
runs): README.md, "Benchmark on an accelerator", says how to stage it. Both engines load
the same converted tiny.en weights (fp16 on a GPU) in this one process, and run, one
after the other, on the short English clips of ../shared (2-20 s each, one file at a
time) and on a long recording built here from ../shared/audio's clips. For each: ×
realtime (model load excluded), WER, and how busy the GPU was (NVML, sampled every
20 ms). Results go to stdout and, as Markdown and JSON, to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jiwer
import platformdirs

from bench import data
from bench.__main__ import normalise


class GPUBusy:
    """The GPU's utilization, sampled in a thread while a measurement runs."""

    def __init__(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVIDIA GPU: no figure
            self.nvml = None
        self.samples: list[int] = []
        self._stop = threading.Event()

    def __enter__(self) -> GPUBusy:
        self.samples, self._stop = [], threading.Event()
        if self.nvml is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.samples.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.nvml is not None:
            self._thread.join()

    @property
    def percent(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def watcherd(model_cache: Path, **settings) -> Callable[[Path], str]:
    from watcherd.engine import Engine

    engine = Engine("tiny.en", model_cache, **settings)
    engine.load()
    return lambda path: engine.transcribe(path).text


def watcherd_queue(model_cache: Path) -> Callable[[Path], str]:
    """The files as the daemon takes a queue of them: one stream of windows."""
    from watcherd.engine import DecodeOptions, Engine, Request

    engine = Engine("tiny.en", model_cache)
    engine.load()

    def many(paths: list[Path]) -> list[str]:
        requests = [Request(path, DecodeOptions(), tag=i) for i, path in enumerate(paths)]
        texts = {r.tag: t.text for r, t in engine.stream(requests)}
        return [texts[i] for i in range(len(paths))]

    run = lambda path: many([path])[0]  # noqa: E731
    run.many = many
    return run


def watcherd_decoding_in_process(model_cache: Path) -> Callable[[Path], str]:
    """watcherd with every file decoded in its own process (as before `audio/child.py`)."""
    from watcherd.engine import lightning

    run = watcherd(model_cache)

    def in_process(path: Path) -> str:
        saved, lightning.CHILD_DECODE_SECONDS = lightning.CHILD_DECODE_SECONDS, float("inf")
        try:
            return run(path)
        finally:
            lightning.CHILD_DECODE_SECONDS = saved

    return in_process


def mlx_whisper(model_cache: Path) -> Callable[[Path], str]:
    import mlx.core as mx
    import mlx_whisper as stock

    from watcherd.engine.audio.decode import load_audio
    from watcherd.engine.model import models

    loaded = models.load("tiny.en", model_cache)  # the same converted weights

    def run(path: Path) -> str:
        return stock.transcribe(load_audio(path), path_or_hf_repo=str(loaded.path),
                                fp16=loaded.dtype == mx.float16)["text"]  # fmt: skip

    return run


def cutting_only(model_cache: Path) -> Callable[[Path], str]:
    """Decoding the audio and cutting its chunks, as watcherd does ahead of the model:
    the floor under the pipeline's time."""
    from watcherd.engine.audio import chunks, decode
    from watcherd.engine.audio.ahead import ahead
    from watcherd.engine.model import models

    spare = models.get("tiny.en", model_cache).compute.spare_cores

    def run(path: Path) -> str:
        blocks = decode.stream_audio(path, 60 * decode.SAMPLE_RATE)
        cut = chunks.speech_chunks(blocks, workers=max(0, spare - 1))
        for _ in ahead(cut, 64) if spare else cut:
            pass
        return ""

    return run


ENGINES = {
    "cutting only": cutting_only,
    "watcherd": lambda cache: watcherd(cache),
    "watcherd one stream": watcherd_queue,
    "watcherd decode in-process": watcherd_decoding_in_process,
    "watcherd batch 8": lambda cache: watcherd(cache, batch_size=8),
    "watcherd vad=false": lambda cache: watcherd(cache, vad=False),
    "mlx-whisper": mlx_whisper,
}


def measure(transcribe: Callable[[Path], str], items: list[data.Item], busy: GPUBusy) -> dict:
    """The second of two passes: the first compiles what a daemon compiles once (a step
    per batch size) and warms the caches, for every engine alike."""
    paths = [item.path for item in items]
    many = getattr(transcribe, "many", lambda paths: [transcribe(p) for p in paths])
    many(paths)
    started = time.perf_counter()
    with busy:
        texts = many(paths)
    seconds = time.perf_counter() - started
    audio = sum(i.seconds for i in items)
    refs = [normalise(i.reference, i.language) for i in items]
    hyps = [normalise(t, i.language) for t, i in zip(texts, items, strict=True)]
    wer = round(100 * jiwer.wer(refs, hyps), 2) if any(hyps) else "-"
    return {"audio_seconds": round(audio, 1), "seconds": round(seconds, 2),
            "xrt": round(audio / seconds, 1), "wer": wer,
            "gpu_busy_percent": busy.percent}  # fmt: skip


def versions() -> str:
    import importlib.metadata as metadata

    import mlx.core as mx

    names = ["mlx", "mlx-cuda-13", "mlx-metal", "mlx-whisper", "av", "numpy", "onnxruntime"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    device = mx.device_info().get("device_name", str(mx.default_device()))
    return f"{device}; Python {platform.python_version()}; " + ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--profile", action="store_true", help="profile watcherd, long file")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = Path(platformdirs.user_cache_dir("watcherd", appauthor=False)) / "models"
    clips = [i for i in data.listed(data.AUDIO) + data.listed(data.DEV)
             if i.language == "en" and 2 <= i.seconds <= 20]  # fmt: skip
    long = [data.concatenated(f"medley_{args.minutes:g}min", args.minutes)]
    busy = GPUBusy()
    rows = []
    for name in args.engines.split(","):
        started = time.perf_counter()
        transcribe = ENGINES[name](cache)
        load = time.perf_counter() - started
        for title, items in ((f"{len(clips)} short clips", clips),
                             (f"{args.minutes:g}-minute recording", long)):  # fmt: skip
            row = {"engine": name, "set": title, "load_seconds": round(load, 2)}
            rows.append(row | measure(transcribe, items, busy))
            print(json.dumps(rows[-1]), flush=True)
    if args.profile:
        import cProfile
        import pstats

        transcribe = ENGINES["watcherd"](cache)
        profiler = cProfile.Profile()
        profiler.runcall(transcribe, long[0].path)
        with (args.out / "gpu_profile.txt").open("w") as f:
            pstats.Stats(profiler, stream=f).sort_stats("cumulative").print_stats(40)
    lines = [f"Machine: {versions()}. {time.strftime('%Y-%m-%d')}.", "",
             "| set | engine | × realtime | WER % | GPU busy % | seconds |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: r["set"]):
        lines.append(f"| {r['set']} | {r['engine']} | {r['xrt']} | {r['wer']} | "
                     f"{r['gpu_busy_percent']} | {r['seconds']} |")  # fmt: skip
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.md").write_text(text + "\n")
    (args.out / "gpu.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
