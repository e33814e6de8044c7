"""Run the benchmark: `make bench`, or

    python -m bench [--engines a,b] [--only TEXT] [--speed] [--hour] [--two-hours]

Each engine runs in its own process, one after another on the same files and the same
weights, so the figures of one run compare: × realtime (audio seconds over transcription
seconds, model load excluded), word error rate (character error rate for Japanese and
Chinese) after Whisper's text normalizers, words written on audio without speech, and
peak RSS. English runs with tiny.en, other languages with the multilingual base.

By default the development suites (`data.suites`: ../shared/audio and audio-dev, per set,
category and language); `--speed` the speed suite instead (the English clips and the
9-minute recording, with `--hour` and `--two-hours` longer ones). Results go to
bench/results/ and to stdout as Markdown tables.
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
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

from bench import data

RESULTS = Path(__file__).resolve().parent / "results"
ALL = ["watcherd", "watcherd-novad", "mlx-whisper", "faster-whisper-batched", "faster-whisper"]
BASELINE = "faster-whisper-batched"
BY_CHARACTER = {"ja", "zh", "ko"}  # written without spaces: scored per character
english = EnglishTextNormalizer()
basic = BasicTextNormalizer()
letters = BasicTextNormalizer(split_letters=True)


def normalise(text: str, language: str) -> str:
    if language == "en":
        return english(text)
    return (letters if language in BY_CHARACTER else basic)(text)


def run(engine: str, model: str, items: list[data.Item], cache: str) -> dict:
    command = [sys.executable, "-m", "bench.run_engine", engine, model, cache,
               *(str(i.path) for i in items)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def score(result: dict, items: list[data.Item]) -> dict:
    audio = sum(i.seconds for i in items)
    seconds = sum(f["seconds"] for f in result["files"])
    row = {
        "engine": result["engine"],
        "audio_seconds": round(audio, 1),
        "seconds": round(seconds, 2),
        "xrt": round(audio / seconds, 1),
        "load_seconds": round(result["load_seconds"], 2),
        "peak_rss_mb": round(result["peak_rss_mb"]),
    }
    if all(i.language == "none" for i in items):  # no speech: every word is invented
        row["invented_words"] = sum(len(f["text"].split()) for f in result["files"])
        return row
    refs = [normalise(i.reference, i.language) for i in items]
    hyps = [normalise(f["text"], i.language) for f, i in zip(result["files"], items, strict=True)]
    row["wer"] = round(100 * jiwer.wer(refs, hyps), 2)
    return row


def table(title: str, rows: list[dict]) -> str:
    base = next((r for r in rows if r["engine"] == BASELINE), None)
    invented = "invented_words" in rows[0]
    metric = "words written" if invented else "WER %"
    lines = [f"### {title}", "", f"| engine | × realtime | vs {BASELINE} | {metric} | "
             "model load s | peak RSS MB |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ratio = f"{r['xrt'] / base['xrt']:.2f}×" if base else "-"
        value = r["invented_words"] if invented else r["wer"]
        lines.append(f"| {r['engine']} | {r['xrt']} | {ratio} | {value} | "
                     f"{r['load_seconds']} | {r['peak_rss_mb']} |")  # fmt: skip
    return "\n".join(lines)


def summary(results: dict[str, list[dict]], engines: list[str]) -> str:
    """One line per suite: each engine's WER (or words written on no speech)."""
    lines = ["### Summary: WER % per suite (no speech: words written)", "",
             "| suite | files | audio s | " + " | ".join(engines) + " |",
             "|---|---|---|" + "---|" * len(engines)]  # fmt: skip
    for title, rows in results.items():
        by_engine = {r["engine"]: r for r in rows}
        cells = [str(by_engine[e].get("invented_words", by_engine[e].get("wer")))
                 if e in by_engine else "-" for e in engines]  # fmt: skip
        lines.append(f"| {title} | {rows[0].get('files', '-')} | {rows[0]['audio_seconds']} | "
                     + " | ".join(cells) + " |")  # fmt: skip
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
    parser.add_argument("--only", default="", help="only the suites whose title has this text")
    parser.add_argument("--speed", action="store_true", help="the speed suite instead")
    parser.add_argument("--hour", action="store_true", help="also a 63-minute file (slow)")
    parser.add_argument("--two-hours", action="store_true", help="also a 2-hour file (memory)")
    parser.add_argument("--tag", default="latest", help="results file name")
    args = parser.parse_args()
    engines = args.engines.split(",")
    cache = str(Path(platformdirs.user_cache_dir("watcherd", appauthor=False)) / "models")
    if args.speed:
        suites = {"English clips (5 files)": data.english_clips(),
                  "9-minute recording": [data.concatenated("medley_9min", 9)]}  # fmt: skip
        if args.hour:
            suites["63-minute recording"] = [data.concatenated("medley_63min", 63)]
        if args.two_hours:
            suites["2-hour recording"] = [data.concatenated("medley_2h", 120)]
    else:
        suites = data.suites()
    suites = {t: items for t, items in suites.items() if args.only.lower() in t.lower()}
    report = [f"Machine: {machine()}. {time.strftime('%Y-%m-%d')}.", ""]
    raw, results = {}, {}
    for title, items in suites.items():
        model = "tiny.en" if all(i.language in ("en", "none") for i in items) else "base"
        rows = []
        for engine in engines:
            print(f"{title} ({model}): {engine} ...", file=sys.stderr, flush=True)
            result = run(engine, model, items, cache)
            raw[f"{title}/{engine}"] = result
            rows.append(score(result, items) | {"files": len(items)})
        results[title] = rows
        report += [table(f"{title} ({len(items)} files, {model})", rows), ""]
        print(report[-2], file=sys.stderr, flush=True)
    report += [summary(results, engines), ""]
    text = "\n".join(report)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.tag}.md").write_text(text + "\n")
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
