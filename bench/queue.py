"""A queue of short clips through a running daemon: throughput in audio seconds per second.

    python -m bench.queue [--files 100]

A real daemon (tiny.en, default settings) runs in a temporary folder; the clips (the
English clips of 2-20 s from ../shared/audio and audio-dev, in turn, under new names) are
renamed into its inbox at once. The clock runs from that moment until `status` counts
every file done; each must be done exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import platformdirs

from bench import data


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "watcherd", *args, "--config", str(config)]


def status(config: Path, env: dict) -> dict:
    done = subprocess.run(command(config, "status", "--json", "--limit", "1000"),
                          capture_output=True, text=True, env=env, check=True)  # fmt: skip
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100)
    args = parser.parse_args()
    cache = Path(platformdirs.user_cache_dir("watcherd", appauthor=False)) / "models"
    clips = [i for i in data.listed(data.AUDIO) + data.listed(data.DEV)
             if i.language == "en" and 2 <= i.seconds <= 20]  # fmt: skip
    chosen = [clips[n % len(clips)] for n in range(args.files)]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        inbox, staging = root / "inbox", root / "staging"
        staging.mkdir()
        config = root / "config.toml"
        config.write_text(
            f'inboxes = ["{inbox}"]\ndatabase = "{root}/state/jobs.db"\n'
            f'log_dir = "{root}/logs"\nmodel_cache_dir = "{cache}"\nquiet_seconds = 0.5\n'
        )
        for n, item in enumerate(chosen):
            shutil.copy(item.path, staging / f"{n:03d} {item.path.name}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHERD_")}
        daemon = subprocess.Popen(command(config, "run"), env=env, stderr=subprocess.DEVNULL)
        try:
            while status(config, env)["daemon"].get("phase") != "ready":
                time.sleep(0.5)
            started = time.monotonic()
            for clip in sorted(staging.iterdir()):
                os.rename(clip, inbox / clip.name)
            while True:
                counts = status(config, env)["counts"]
                if counts["done"] + counts["failed"] >= args.files:
                    break
                time.sleep(0.5)
            seconds = time.monotonic() - started
            jobs = status(config, env)["jobs"]
        finally:
            daemon.terminate()
            daemon.wait(30)
    audio = sum(i.seconds for i in chosen)
    done = [j for j in jobs if j["state"] == "done"]
    print(f"{len(done)} of {args.files} clips done ({len({j['path'] for j in done})} distinct "
          f"files), {audio:.0f} s of audio in {seconds:.1f} s: "
          f"{audio / seconds:.1f} audio seconds per second")  # fmt: skip


if __name__ == "__main__":
    main()
