"""Several machines, one queue: throughput with one and with two daemons on PostgreSQL
(SQLite, one daemon, as the baseline), and the claim's latency under concurrent workers.

    python -m bench.fleet [--files 100] [--claims 400] [--workers 4] [--database URL]

Each run starts real daemons (tiny.en, default settings) in a temporary folder and renames
the clips (the English clips of 2-20 s from ../shared/audio and audio-dev, in turn, under
new names) into the inbox at once; the clock runs until `status` counts every file done,
each exactly once. Two daemons have their own worker names and see the inbox through two
paths (one a symlink), as two machines mount one share. On one machine they share its
cores: the two-daemon figure measures the design's overhead per job (claims, leases,
heartbeats, a second model in memory), not a speed-up.

The claim latency: `--workers` processes claim (and at once finish) jobs from one queue of
`--claims` jobs on the server, as fast as they can; the median and 95th percentile of one
`claim()` call, in milliseconds.

With `--database`, that database's queue is emptied before each run. Without, a
throwaway PostgreSQL cluster is started as the tests start one (tests/pgcluster.py;
Debian's `postgresql` package, which `make` installs). Results are printed and written to
bench/results/fleet-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import platformdirs

from bench import data

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "watcherd", *args, "--config", str(config)]


def status(config: Path, env: dict) -> dict:
    done = subprocess.run(command(config, "status", "--json", "--limit", "1000"),
                          capture_output=True, text=True, env=env, check=True)  # fmt: skip
    return json.loads(done.stdout)


def throughput(database: str | None, daemons: int, chosen: list, cache: Path) -> dict:
    """Audio seconds per wall-clock second for the clips through `daemons` daemons."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        inbox, staging = root / "share", root / "staging"
        inbox.mkdir()
        staging.mkdir()
        (root / "mount-2").symlink_to(inbox)
        configs, envs = [], []
        for n in range(daemons):
            home = root / f"worker-{n + 1}"
            home.mkdir()
            seen_at = inbox if n == 0 else root / "mount-2"
            db = database or f"{root}/state/jobs.db"
            config = home / "config.toml"
            config.write_text(
                f'inboxes = [{{ path = "{seen_at}", name = "share" }}]\ndatabase = "{db}"\n'
                f'worker_name = "worker-{n + 1}"\nlog_dir = "{home}/logs"\n'
                f'model_cache_dir = "{cache}"\nquiet_seconds = 0.5\n'
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHERD_")}
            configs.append(config)
            envs.append(env | {"HOME": str(home)})
        for n, item in enumerate(chosen):
            shutil.copy(item.path, staging / f"{n:03d} {item.path.name}")
        procs = [subprocess.Popen(command(c, "run"), env=e, stderr=subprocess.DEVNULL)
                 for c, e in zip(configs, envs, strict=True)]  # fmt: skip
        try:
            for config, env in zip(configs, envs, strict=True):
                while status(config, env)["daemon"].get("phase") != "ready":
                    time.sleep(0.5)
            started = time.monotonic()
            for clip in sorted(staging.iterdir()):
                os.rename(clip, inbox / clip.name)
            while True:
                counts = status(configs[0], envs[0])["counts"]
                if counts["done"] + counts["failed"] >= len(chosen):
                    break
                time.sleep(0.5)
            seconds = time.monotonic() - started
            jobs = status(configs[0], envs[0])["jobs"]
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
    audio = sum(i.seconds for i in chosen)
    done = [j for j in jobs if j["state"] == "done"]
    return {
        "backend": "postgresql" if database else "sqlite",
        "daemons": daemons,
        "files": len(chosen),
        "done": len(done),
        "distinct": len({j["path"] for j in done}),
        "by_worker": {w: sum(j["worker"] == w for j in done) for w in {j["worker"] for j in done}},
        "audio_seconds": round(audio, 1),
        "wall_seconds": round(seconds, 1),
        "audio_seconds_per_second": round(audio / seconds, 2),
    }


def _claimer(url: str, name: str, start, results) -> None:
    from watcherd.store import open_store

    store = open_store(url, worker=name, inboxes={"share": Path("/share")})
    took = []
    start.wait()
    while True:
        began = time.perf_counter()
        job = store.claim()
        took.append(time.perf_counter() - began)
        if job is None:
            break
        store.finish(job.id, outputs=[], audio_seconds=1, processing_seconds=1, model="bench",
                     language="en")  # fmt: skip
    store.close()
    results.put(took[:-1])  # the last call found the queue empty


def claim_latency(url: str, jobs: int, workers: int) -> dict:
    from watcherd.store import open_store

    store = open_store(url, worker="bench", inboxes={"share": Path("/share")})
    for n in range(jobs):
        store.enqueue(f"/share/{n:05d}.wav", size=1, mtime_ns=1, sha256=f"{n}")
    store.close()
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    procs = [context.Process(target=_claimer, args=(url, f"claimer-{n}", start, results))
             for n in range(workers)]  # fmt: skip
    for proc in procs:
        proc.start()
    time.sleep(2)  # every process connected
    start.set()
    took = [t for _ in procs for t in results.get(timeout=600)]
    for proc in procs:
        proc.join(30)
    ms = sorted(t * 1000 for t in took)
    return {
        "workers": workers,
        "claims": len(ms),
        "median_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 2),
    }


def clear(url: str) -> str:
    """The given database, its queue emptied for the next run."""
    from watcherd.store import open_store

    store = open_store(url)
    store.run("TRUNCATE jobs, hooks, checkpoints, workers, daemon")
    store.close()
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--claims", type=int, default=400)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--database", help="a PostgreSQL database to use (its URL); its queue "
                        "is emptied before each run")  # fmt: skip
    args = parser.parse_args()
    cache = Path(platformdirs.user_cache_dir("watcherd", appauthor=False)) / "models"
    clips = [i for i in data.listed(data.AUDIO) + data.listed(data.DEV)
             if i.language == "en" and 2 <= i.seconds <= 20]  # fmt: skip
    chosen = [clips[n % len(clips)] for n in range(args.files)]

    cluster = None
    if args.database:
        databases = (clear(args.database) for _ in range(3))
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from pgcluster import Cluster, server_binaries

        cluster = Cluster(server_binaries())
        cluster.start()
        databases = iter(cluster.create_database() for _ in range(3))
    try:
        runs = [throughput(None, 1, chosen, cache)]
        print(json.dumps(runs[-1]))
        for daemons in (1, 2):
            runs.append(throughput(next(databases), daemons, chosen, cache))
            print(json.dumps(runs[-1]))
        latency = claim_latency(next(databases), args.claims, args.workers)
        print(json.dumps(latency))
    finally:
        if cluster is not None:
            cluster.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"fleet-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"throughput": runs, "claim_latency": latency}, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
