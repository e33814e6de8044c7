"""Memory handed back when idle: a real daemon's RSS while it works, after it unloads its
model, and after it reloads it, and how long the reload takes.

    python -m bench.idle_memory [--model tiny.en] [--rounds 3] [--minutes 9]

A daemon (`idle_unload_seconds = 2`) runs in a temporary folder. Each round drops the long
recording (bench/data, the English clips concatenated) into its inbox, samples the
daemon's RSS every 50 ms while it works, waits for the unload, then drops a short clip: the
model loads again for it. The daemon's own log gives the RSS just before and after each
unload and the reload's duration.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import platformdirs
import psutil

from bench.data import AUDIO, concatenated

IDLE_SECONDS = 2


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "watcherd", *args, "--config", str(config)]


def events(log: Path, name: str) -> list[dict]:
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == name:
            found.append(event)
    return found


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def done_count(config: Path, env: dict) -> int:
    out = subprocess.run(command(config, "status", "--json"), capture_output=True, text=True,
                         env=env, check=True).stdout  # fmt: skip
    return json.loads(out)["counts"]["done"]


def peak_rss_while(process: psutil.Process, until) -> float:
    peak = 0
    while not until():
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.05)
    return peak / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=9)
    args = parser.parse_args()
    long_file = concatenated(f"medley_{args.minutes:g}min", args.minutes).path
    cache = Path(platformdirs.user_cache_dir("watcherd", appauthor=False)) / "models"
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        inbox, log = root / "inbox", root / "logs" / "watcherd.log"
        config = root / "config.toml"
        config.write_text(
            f'inboxes = ["{inbox}"]\ndatabase = "{root}/state/jobs.db"\n'
            f'log_dir = "{root}/logs"\nmodel_cache_dir = "{cache}"\nquiet_seconds = 0.3\n'
            f'model = "{args.model}"\nidle_unload_seconds = {IDLE_SECONDS}\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHERD_")}
        daemon = subprocess.Popen(command(config, "run"), env=env, stderr=subprocess.DEVNULL)
        try:
            # The first unload comes after the start's own idle time.
            (start,) = wait(lambda: events(log, "models_unloaded"), 120, "the start's unload")
            process = psutil.Process(daemon.pid)
            for n in range(args.rounds):
                finished = 2 * n
                shutil.copy(long_file, inbox / f"long-{n}.wav")
                working = peak_rss_while(process, lambda f=finished: done_count(config, env) > f)
                # Unloads: one after the start, then two a round (after each file).
                unloaded = wait(lambda c=2 * n + 2: events(log, "models_unloaded")[c - 1:c], 60,
                                "the unload")[0]  # fmt: skip
                time.sleep(0.5)
                settled = process.memory_info().rss / 1e6
                shutil.copy(AUDIO / "jfk.flac", inbox / f"jfk-{n}.flac")
                reloaded = wait(lambda c=n + 1: events(log, "models_reloaded")[c - 1:c], 60,
                                "the reload")[0]  # fmt: skip
                wait(lambda f=finished + 1: done_count(config, env) > f, 60, "the clip")
                rows.append({
                    "working_peak_mb": working,
                    "before_unload_mb": unloaded["rss_mb_before"],
                    "after_unload_mb": unloaded["rss_mb_after"],
                    "idle_unloaded_mb": settled,
                    "after_reload_mb": reloaded["rss_mb"],
                    "reload_seconds": reloaded["seconds"],
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
                wait(lambda c=2 * n + 3: len(events(log, "models_unloaded")) >= c, 60,
                     "idle again")  # fmt: skip
        finally:
            daemon.terminate()
            daemon.wait(30)
    print(f"\nmodel {args.model}, {args.minutes:g}-minute recording, {args.rounds} rounds "
          "(median; min-max)\n")  # fmt: skip
    print("| daemon's RSS | MB |")
    print("|---|---|")
    print(f"| started, model loaded, no file yet | {start['rss_mb_before']:.0f} |")
    print(f"| ... unloaded after {IDLE_SECONDS} s idle | {start['rss_mb_after']:.0f} |")
    labels = {
        "working_peak_mb": f"while transcribing the {args.minutes:g}-minute recording (peak)",
        "before_unload_mb": "idle, model loaded (just before the unload)",
        "after_unload_mb": "just after the unload",
        "idle_unloaded_mb": "idle, unloaded (0.5 s later)",
        "after_reload_mb": "after the reload (model loaded again, before decoding)",
    }
    for key, label in labels.items():
        values = [row[key] for row in rows]
        print(f"| {label} | {statistics.median(values):.0f} "
              f"({min(values):.0f}-{max(values):.0f}) |")  # fmt: skip
    seconds = [row["reload_seconds"] for row in rows]
    print(f"\nreload: {statistics.median(seconds):.2f} s median "
          f"({min(seconds):.2f}-{max(seconds):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
