"""Run the benchmark: `make bench` (or `python -m bench [--hour] [--two-hours] [--engines a,b]`).

Each engine runs in its own process, one after another on the same files, so the
figures in one run are comparable: x realtime (audio seconds / transcription seconds,
model load excluded and shown apart), word error rate with Whisper's English text
normalizer, and peak RSS. Results go to bench/results/ and stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jiwer
import platformdirs
from whisper_normalizer.english import EnglishTextNormalizer

from bench import data

RESULTS = Path(__file__).resolve().parent / "results"
ALL = ["watcherd", "watcherd-novad", "mlx-whisper", "faster-whisper-batched", "faster-whisper"]
normalise = EnglishTextNormalizer()


def run(engine: str, items: list[data.Item], cache: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "bench.run_engine",
        engine,
        cache,
        *map(str, (i.path for i in items)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def score(result: dict, items: list[data.Item]) -> dict:
    audio = sum(i.seconds for i in items)
    seconds = sum(f["seconds"] for f in result["files"])
    refs = [normalise(i.reference) for i in items]
    hyps = [normalise(f["text"]) for f in result["files"]]
    return {
        "engine": result["engine"],
        "audio_seconds": round(audio, 1),
        "seconds": round(seconds, 2),
        "xrt": round(audio / seconds, 1),
        "wer": round(100 * jiwer.wer(refs, hyps), 2),
        "load_seconds": round(result["load_seconds"], 2),
        "peak_rss_mb": round(result["peak_rss_mb"]),
    }


def table(title: str, rows: list[dict], baseline: str = "faster-whisper-batched") -> str:
    base = next((r for r in rows if r["engine"] == baseline), None)
    lines = [f"### {title}", "", "| engine | × realtime | vs faster-whisper batched | WER % | "
             "model load s | peak RSS MB |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ratio = f"{r['xrt'] / base['xrt']:.2f}×" if base else "-"
        lines.append(f"| {r['engine']} | {r['xrt']} | {ratio} | {r['wer']} | "
                     f"{r['load_seconds']} | {r['peak_rss_mb']} |")  # fmt: skip
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engines", default=",".join(ALL))
    parser.add_argument("--hour", action="store_true", help="also a 63-minute file (slow)")
    parser.add_argument("--two-hours", action="store_true", help="also a 2-hour file (memory)")
    args = parser.parse_args()
    engines = args.engines.split(",")
    cache = str(Path(platformdirs.user_cache_dir("watcherd", appauthor=False)) / "models")
    sets = {
        "English clips (5 files)": data.english_clips(),
        "9-minute recording": [data.concatenated("medley_9min", 9)],
    }
    if args.hour:
        sets["63-minute recording"] = [data.concatenated("medley_63min", 63)]
    if args.two_hours:
        sets["2-hour recording"] = [data.concatenated("medley_2h", 120)]
    report = [f"Machine: {machine()}. {time.strftime('%Y-%m-%d')}. Model: tiny.en.", ""]
    raw = {}
    for title, items in sets.items():
        rows = []
        for engine in engines:
            print(f"{title}: {engine} ...", file=sys.stderr, flush=True)
            result = run(engine, items, cache)
            raw[f"{title}/{engine}"] = result
            rows.append(score(result, items))
        report += [table(title, rows), ""]
    text = "\n".join(report)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(text + "\n")
    (RESULTS / "latest.json").write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
