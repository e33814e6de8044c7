"""The command run after each job: its environment and stdin, a timeout that kills it and
everything it started, and exactly-once-after-the-end across a real kill -9."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from helpers import (
    log_events,
    run_cli,
    start_daemon,
    status_json,
    stop_daemon,
    wait_for,
    write_config,
)

from watcherd import hooks
from watcherd.config import load_settings
from watcherd.store import Job

# A hook that records what it was given: its arguments, its WATCHERD_* variables and its
# stdin, one JSON file per run, written before it does anything else. A source whose name
# says so makes it misbehave: "slow" starts a child and outsleeps any timeout; "hang" does
# so on its first attempt only (the test kills the daemon meanwhile).
RECORDER = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    records = sys.argv[1]
    env = {k: v for k, v in os.environ.items() if k.startswith("WATCHERD_")}
    run = f"{env['WATCHERD_JOB_ID']}-{env['WATCHERD_HOOK_ATTEMPT']}"
    record = {"argv": sys.argv[1:], "env": env, "stdin": sys.stdin.read(), "pid": os.getpid()}
    source = os.path.basename(env["WATCHERD_SOURCE"])
    if "slow" in source or ("hang" in source and env["WATCHERD_HOOK_ATTEMPT"] == "1"):
        child = subprocess.Popen(["sleep", "300"])
        record["child"] = child.pid
    with open(os.path.join(records, run + ".tmp"), "w") as f:
        json.dump(record, f)
    os.rename(os.path.join(records, run + ".tmp"), os.path.join(records, run + ".json"))
    print(f"recorded {run}")
    if "child" in record:
        time.sleep(300)
    if "fail" in source:
        sys.exit("the notes vault is offline")
    """
)


@pytest.fixture
def recorder(tmp_path) -> tuple[list[str], Path]:
    """The hook's command line, and the folder its records go to."""
    script = tmp_path / "record hook.py"  # a space: the command is never split again
    script.write_text(RECORDER, encoding="utf-8")
    records = tmp_path / "records"
    records.mkdir()
    return [sys.executable, str(script), str(records)], records


def runs(records: Path) -> dict[str, dict]:
    """Every recorded run, by "<job id>-<attempt>"."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(records.glob("*.json"))}


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def jobs_by_name(config, home) -> dict[str, dict]:
    return {os.path.basename(j["path"]): j for j in status_json(config, home)["jobs"]}


def hook_ended(config, home, name: str) -> dict | None:
    job = jobs_by_name(config, home).get(name)
    hook = job and job["hook"]
    return job if hook and hook["state"] not in ("pending", "running") else None


# --- the command and its environment, without the daemon ---------------------------------


def test_the_hook_variables_are_only_this_jobs():
    job = Job(id=7, path="/in/a b.m4a", state="done", size=1, sha256="x", attempts=1,
              created_at=0, audio_seconds=11.0, language="en",
              outputs=["/in/a b.txt", "/in/a b.en.srt", "/vault/a b.md"])  # fmt: skip
    inherited = {"PATH": "/bin", "WATCHERD_OUTPUT_VTT": "/old.vtt", "WATCHERD_CONFIG": "/c"}
    env = hooks.environment(job, "done", 2, base=inherited)
    assert {k: v for k, v in env.items() if k.startswith("WATCHERD_")} == {
        "WATCHERD_CONFIG": "/c",  # a `watcherd` command run from the hook uses the same
        "WATCHERD_JOB_ID": "7",
        "WATCHERD_SOURCE": "/in/a b.m4a",
        "WATCHERD_STATE": "done",
        "WATCHERD_LANGUAGE": "en",
        "WATCHERD_AUDIO_SECONDS": "11.0",
        "WATCHERD_OUTPUT_TXT": "/in/a b.txt",
        "WATCHERD_OUTPUT_SRT": "/in/a b.en.srt",
        "WATCHERD_OUTPUT_MD": "/vault/a b.md",
        "WATCHERD_HOOK_ATTEMPT": "2",
    }
    assert env["PATH"] == "/bin"


def test_a_hook_can_run_watcherd_itself(tmp_path, monkeypatch):
    """Its variables are not mistaken for settings: not unknown ones, and its job's
    WATCHERD_LANGUAGE does not fix the language of what the hook transcribes."""
    job = Job(id=1, path="/in/a.m4a", state="done", size=1, sha256="x", attempts=1,
              created_at=0, outputs=["/in/a.txt"], language="fr")  # fmt: skip
    config = tmp_path / "c.toml"
    config.write_text('model = "base"\n')
    for key, value in hooks.environment(job, "done", 1, base={}).items():
        monkeypatch.setenv(key, value)
    settings = load_settings(config)
    assert settings.model == "base" and settings.language is None
    monkeypatch.delenv(hooks.ATTEMPT)  # outside a hook the variable is the setting
    assert load_settings(config).language == "fr"


def test_a_command_is_split_as_a_shell_would_but_run_without_one(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        """on_done = "~/bin/file it --to 'My Vault' $HOME"\n"""
        """on_failed = ["/bin/tell", "a b", "~"]\n"""
        """[[inboxes]]\npath = "/quiet"\non_done = ""\n"""
    )
    settings = load_settings(config)
    home = os.path.expanduser("~")
    assert settings.on_done == (f"{home}/bin/file", "it", "--to", "My Vault", "$HOME")
    assert settings.on_failed == ("/bin/tell", "a b", home)
    assert settings.profile("/quiet/x.wav").on_done == (), "an inbox turns it off"
    config.write_text('on_done = "unbalanced \'quote"\n')
    with pytest.raises(Exception, match="on_done"):
        load_settings(config)


def test_a_hook_that_outlives_its_timeout_is_killed_with_its_children(tmp_path):
    pids = tmp_path / "pids"
    command = ("sh", "-c", f'sleep 300 & echo $! > "{pids}"; echo started; wait')
    outcome = hooks.run(command, dict(os.environ), None, 0.5, threading.Event())
    assert (outcome.state, outcome.error) == ("timed_out", "timed out after 0.5 s (killed)")
    assert outcome.exit_code == -signal.SIGKILL and "started" in outcome.stdout
    sleeper = int(pids.read_text())
    wait_for(lambda: not alive(sleeper), 5, message="the hook's child to be gone")


def test_a_hook_that_never_reads_a_large_stdin_does_not_block():
    big = json.dumps({"text": "word " * 500_000})  # far more than a pipe holds
    outcome = hooks.run(("true",), dict(os.environ), big, 30, threading.Event())
    assert outcome.state == "done" and outcome.exit_code == 0


def test_a_failing_hook_reports_its_exit_code_and_last_words():
    command = ("sh", "-c", "echo working; echo 'cp: /vault: No such file' >&2; exit 3")
    outcome = hooks.run(command, dict(os.environ), None, 30, threading.Event())
    assert (outcome.state, outcome.exit_code) == ("failed", 3)
    assert outcome.error == "exit 3: cp: /vault: No such file"
    assert outcome.stdout == "working\n"


def test_a_hook_that_cannot_start_says_why():
    outcome = hooks.run(("/no/such/hook",), dict(os.environ), None, 30, threading.Event())
    assert outcome.state == "failed" and outcome.exit_code is None
    assert outcome.error == "cannot run /no/such/hook: No such file or directory"


def test_a_stop_interrupts_a_running_hook():
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    assert hooks.run(("sleep", "300"), dict(os.environ), None, 60, stop) is None


# --- through the daemon ------------------------------------------------------------------


def test_the_hook_gets_the_job_in_its_environment_and_the_json_transcript_on_stdin(
    tmp_path, model_cache, engine, audio_dir, recorder
):
    command, records = recorder
    config = write_config(
        tmp_path,
        model_cache,
        formats=["txt", "srt", "vtt", "json", "md"],
        subtitle_names="language",
        on_done=shlex.join([*command, "a b $HOME"]),  # a string: split, never a shell
        on_failed=command,
    )
    inbox = tmp_path / "inbox"
    proc = start_daemon(config, tmp_path)
    try:
        shutil.copy(audio_dir / "jfk.flac", inbox / "jfk.flac")
        (inbox / "broken.mp3").write_text("not audio at all\n")
        wait_for(lambda: len(runs(records)) == 2 and hook_ended(config, tmp_path, "jfk.flac")
                 and hook_ended(config, tmp_path, "broken.mp3"), 120,
                 message="both hooks to run")  # fmt: skip
    finally:
        stop_daemon(proc)

    jobs = jobs_by_name(config, tmp_path)
    done, failed = jobs["jfk.flac"], jobs["broken.mp3"]
    recorded = runs(records)
    assert sorted(recorded) == [f"{done['id']}-1", f"{failed['id']}-1"]
    ran = recorded[f"{done['id']}-1"]
    assert ran["argv"] == [str(records), "a b $HOME"]
    outputs = {f"WATCHERD_OUTPUT_{p.rsplit('.', 1)[1].upper()}": p for p in done["outputs"]}
    assert set(outputs) == {f"WATCHERD_OUTPUT_{f}" for f in ("TXT", "SRT", "VTT", "JSON", "MD")}
    assert ran["env"] == {
        "WATCHERD_JOB_ID": str(done["id"]),
        "WATCHERD_SOURCE": str(inbox / "jfk.flac"),
        "WATCHERD_STATE": "done",
        "WATCHERD_LANGUAGE": "en",
        "WATCHERD_AUDIO_SECONDS": str(done["audio_seconds"]),
        "WATCHERD_HOOK_ATTEMPT": "1",
        **outputs,
    }
    assert outputs["WATCHERD_OUTPUT_SRT"] == str(inbox / "jfk.en.srt")
    assert all(Path(p).exists() for p in outputs.values()), "run after the outputs are in place"
    assert ran["stdin"] == (inbox / "jfk.json").read_text(encoding="utf-8")
    assert "americans" in json.loads(ran["stdin"])["text"].lower()

    ran = recorded[f"{failed['id']}-1"]
    assert failed["state"] == "failed" and failed["error"].startswith(str(inbox / "broken.mp3"))
    assert ran["argv"] == [str(records)]
    assert ran["env"] == {
        "WATCHERD_JOB_ID": str(failed["id"]),
        "WATCHERD_SOURCE": str(inbox / "broken.mp3"),
        "WATCHERD_STATE": "failed",
        "WATCHERD_LANGUAGE": "",
        "WATCHERD_AUDIO_SECONDS": "",
        "WATCHERD_ERROR": failed["error"],
        "WATCHERD_HOOK_ATTEMPT": "1",
    }
    assert ran["stdin"] == ""

    assert done["hook"] == {"state": "done", "attempts": 1, "error": None}
    logged = {e["job_id"]: e for e in log_events(tmp_path, "hook_done")}
    assert logged[done["id"]]["exit_code"] == 0
    assert logged[done["id"]]["stdout"] == f"recorded {done['id']}-1\n"


def test_a_hook_that_hangs_is_killed_at_its_timeout_and_the_queue_goes_on(
    tmp_path, model_cache, engine, audio_dir, recorder
):
    command, records = recorder
    config = write_config(tmp_path, model_cache, on_done=command, hook_timeout_seconds=2,
                          formats=["txt"])  # fmt: skip
    inbox = tmp_path / "inbox"
    proc = start_daemon(config, tmp_path)
    try:
        shutil.copy(audio_dir / "jfk.flac", inbox / "slow.flac")
        wait_for(lambda: runs(records), 60, message="the slow hook to start")
        shutil.copy(audio_dir / "jfk.flac", inbox / "fail.flac")
        wait_for(lambda: hook_ended(config, tmp_path, "fail.flac"), 120,
                 message="the next job and its hook")  # fmt: skip
        text = run_cli("status", config=config, home=tmp_path).stdout
    finally:
        stop_daemon(proc)
    jobs = jobs_by_name(config, tmp_path)
    slow, following = jobs["slow.flac"], jobs["fail.flac"]
    assert slow["state"] == following["state"] == "done", "a hook never fails a transcription"
    assert following["started_at"] > slow["finished_at"]
    assert slow["hook"] == {"state": "timed_out", "attempts": 1,
                            "error": "timed out after 2 s (killed)"}  # fmt: skip
    assert following["hook"] == {"state": "failed", "attempts": 1,
                                 "error": "exit 1: the notes vault is offline"}  # fmt: skip
    (timed_out,) = log_events(tmp_path, "hook_timed_out")
    assert timed_out["job_id"] == slow["id"] and timed_out["exit_code"] == -signal.SIGKILL
    assert timed_out["stdout"] == f"recorded {slow['id']}-1\n"
    (failed,) = log_events(tmp_path, "hook_failed")
    assert failed["exit_code"] == 1 and "the notes vault is offline" in failed["stderr"]
    child = runs(records)[f"{slow['id']}-1"]["child"]
    wait_for(lambda: not alive(child), 10, message="the hook's own child to be killed too")
    rows = {line.rsplit("/", 1)[-1]: line for line in text.splitlines() if "/inbox/" in line}
    assert text.splitlines()[3].split()[:5] == ["ID", "STATE", "AUDIO", "SPEED", "HOOK"]
    assert "timed out" in rows["slow.flac"] and "failed" in rows["fail.flac"]
    assert "↳ hook: timed out after 2 s (killed)" in text
    assert "↳ hook: exit 1: the notes vault is offline" in text


def test_a_hook_the_daemon_died_in_runs_once_more_and_never_a_third_time(
    tmp_path, model_cache, engine, audio_dir, recorder
):
    command, records = recorder
    config = write_config(tmp_path, model_cache, on_done=command, formats=["txt"])
    inbox = tmp_path / "inbox"
    proc = start_daemon(config, tmp_path)
    try:
        shutil.copy(audio_dir / "jfk.flac", inbox / "first.flac")
        wait_for(lambda: hook_ended(config, tmp_path, "first.flac"), 120,
                 message="the first job's hook to finish")  # fmt: skip
        shutil.copy(audio_dir / "jfk.flac", inbox / "hang.flac")
        wait_for(lambda: len(runs(records)) == 2, 120, message="the second hook to start")
        proc.kill()  # kill -9 while the hook runs
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    jobs = jobs_by_name(config, tmp_path)
    first, hang = jobs["first.flac"], jobs["hang.flac"]
    orphan = runs(records)[f"{hang['id']}-1"]
    assert hang["state"] == "done" and hang["hook"]["state"] == "running"
    os.kill(orphan["pid"], signal.SIGKILL)  # the interrupted run, still sleeping
    os.kill(orphan["child"], signal.SIGKILL)

    proc = start_daemon(config, tmp_path)
    try:
        wait_for(lambda: hook_ended(config, tmp_path, "hang.flac"), 60,
                 message="the interrupted hook to run again")  # fmt: skip
    finally:
        stop_daemon(proc)
    again = runs(records)[f"{hang['id']}-2"]
    assert again["env"]["WATCHERD_HOOK_ATTEMPT"] == "2"
    assert again["stdin"] == orphan["stdin"] != "", "the same transcript on stdin"
    assert jobs_by_name(config, tmp_path)["hang.flac"]["hook"] == {
        "state": "done", "attempts": 2, "error": None
    }  # fmt: skip

    proc = start_daemon(config, tmp_path)  # once more: nothing is due any more...
    try:
        shutil.copy(audio_dir / "jfk.flac", inbox / "last.flac")
        wait_for(lambda: hook_ended(config, tmp_path, "last.flac"), 120,
                 message="a later job's hook")  # fmt: skip
    finally:
        stop_daemon(proc)
    last = jobs_by_name(config, tmp_path)["last.flac"]
    # ...for due hooks run before the next job is taken: by now a third run would be here.
    assert sorted(runs(records)) == sorted(
        [f"{first['id']}-1", f"{hang['id']}-1", f"{hang['id']}-2", f"{last['id']}-1"]
    )
    assert [e["job_id"] for e in log_events(tmp_path, "hook_started")] == [
        first["id"], hang["id"], hang["id"], last["id"]
    ]  # fmt: skip


def test_doctor_names_a_hook_it_cannot_run_and_a_missing_notifier(tmp_path, recorder, monkeypatch):
    from watcherd import doctor

    command, _ = recorder
    config = tmp_path / "c.toml"
    config.write_text(
        f"notify = true\non_done = {json.dumps(shlex.join(command))}\n"
        '[[inboxes]]\npath = "/in"\n'
        '[[inboxes]]\npath = "/other"\non_failed = "no-such-program --now"\n'
    )
    host = doctor.Host(system="linux", home=tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no notify-send here
    findings = doctor.check_after_jobs(load_settings(config), host)
    by_check = {(f.check, f.status): f for f in findings}
    assert "notify-send is not on PATH" in by_check["notify", "warn"].summary
    assert by_check["hook", "ok"].summary == f"on_done: {shlex.join(command)}"
    failed = by_check["hook", "fail"]
    assert (
        failed.summary == "on_failed runs 'no-such-program', which is not found or not executable"
    )
    assert "full path" in failed.remedy
