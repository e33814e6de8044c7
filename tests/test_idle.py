"""Memory back when idle: a real daemon frees its model after `idle_unload_seconds` with
nothing queued and loads it again for the next file. How much memory that frees, and how
long the reload takes, are measured in bench/idle_memory.py, not asserted here."""

from __future__ import annotations

import shutil
import time

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


def model_loaded(config, home) -> bool | None:
    return status_json(config, home)["daemon"].get("model_loaded")


def test_an_idle_daemon_frees_its_model_and_reloads_it_for_the_next_file(
    tmp_path, model_cache, audio_dir, manifest, engine
):
    config = write_config(tmp_path, model_cache, idle_unload_seconds=1)
    inbox = tmp_path / "inbox"
    proc = start_daemon(config, tmp_path)
    try:
        wait_for(lambda: model_loaded(config, tmp_path) is False, 30, message="the unload")
        (unloaded,) = log_events(tmp_path, "models_unloaded")
        assert unloaded["models"] == 1 and unloaded["idle_seconds"] >= 1
        assert unloaded["rss_mb_after"] < unloaded["rss_mb_before"]
        assert "unloaded while idle" in run_cli("status", config=config, home=tmp_path).stdout

        shutil.copy(audio_dir / "jfk.flac", inbox / "jfk.flac")
        wait_for(lambda: status_json(config, tmp_path)["counts"]["done"] == 1, 60,
                 message="the file after the reload")  # fmt: skip
        (reloaded,) = log_events(tmp_path, "models_reloaded")
        assert reloaded["model"] == "tiny.en" and reloaded["seconds"] > 0
        text = (inbox / "jfk.txt").read_text()
        assert wer(manifest["jfk.flac"]["reference"], text) <= 0.10
        # Idle again: freed again.
        wait_for(lambda: len(log_events(tmp_path, "models_unloaded")) == 2, 30,
                 message="the second unload")  # fmt: skip
        assert model_loaded(config, tmp_path) is False
    finally:
        stop_daemon(proc)


def test_zero_keeps_the_model_loaded(tmp_path, model_cache, audio_dir, engine):
    config = write_config(tmp_path, model_cache, idle_unload_seconds=0)
    proc = start_daemon(config, tmp_path)
    try:
        shutil.copy(audio_dir / "jfk.flac", tmp_path / "inbox" / "jfk.flac")
        wait_for(lambda: status_json(config, tmp_path)["counts"]["done"] == 1, 60,
                 message="the file")  # fmt: skip
        time.sleep(3)  # longer than the worker's idle poll, and than 1 s of idleness
        assert model_loaded(config, tmp_path) is True
    finally:
        stop_daemon(proc)
    assert log_events(tmp_path, "models_unloaded") == []
