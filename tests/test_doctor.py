"""`watcherd doctor`: real folders (unreadable, missing, on a full disk), a real daemon and
its log, the real model; only launchctl and systemctl are stand-ins on PATH, and a Mac's
privacy protection is described to the checks through a fake home folder."""

from __future__ import annotations

import errno
import json
import os
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    cli_env,
    log_events,
    run_cli,
    start_daemon,
    status_json,
    stop_daemon,
    wait_for,
    without_root_powers,
    write_config,
)

from watcherd import doctor
from watcherd.doctor import Host

CHECKS = {"configuration", "inbox", "disk", "model", "compute", "service", "log"}


def run_doctor(config: Path, home: Path, *args: str, env=None, **kwargs):
    result = run_cli("doctor", "--json", *args, config=config, home=home, env=env, **kwargs)
    assert "Traceback" not in result.stderr, result.stderr
    return result, json.loads(result.stdout)


def findings(report: dict, check: str, subject: str | None = None) -> list[dict]:
    return [
        f
        for f in report["findings"]
        if f["check"] == check and (subject is None or f["subject"] == subject)
    ]


def stand_ins(tmp_path: Path, launchctl: str = "", systemctl: str = "") -> dict:
    """launchctl and systemctl that say what the test wants, first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool, text in {"launchctl": launchctl, "systemctl": systemctl}.items():
        script = bin_dir / tool
        script.write_text(f"#!/bin/sh\n{text}\n")
        script.chmod(0o755)
    return cli_env(tmp_path) | {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_a_healthy_setup_passes_every_check_and_names_the_last_error(tmp_path, model_cache, engine):
    config = write_config(tmp_path, model_cache)
    proc = start_daemon(config, tmp_path)
    try:
        (tmp_path / "inbox" / "broken.mp3").write_text("not audio\n")
        wait_for(lambda: status_json(config, tmp_path)["counts"]["failed"] == 1, 60,
                 message="the broken file to fail")  # fmt: skip
        result, report = run_doctor(config, tmp_path)
        text = run_cli("doctor", config=config, home=tmp_path)
    finally:
        stop_daemon(proc)
    assert result.returncode == 0 and report["ok"] is True, report
    assert {f["check"] for f in report["findings"]} == CHECKS
    assert all(f["status"] in ("ok", "info") for f in report["findings"]), report
    (inbox,) = findings(report, "inbox")
    assert inbox["status"] == "ok" and "can list, read and write it" in inbox["summary"]
    (model,) = findings(report, "model")
    assert model["summary"].startswith("tiny.en: loads") and "cached at" in model["summary"]
    blas = findings(report, "compute", "blas")[0]
    assert blas["status"] == "ok" and "OpenBLAS" in blas["summary"]
    (service,) = findings(report, "service")
    assert service["status"] == "info" and f"a daemon runs (pid {proc.pid})" in service["summary"]
    (log,) = findings(report, "log")
    assert "last error at" in log["summary"] and "broken.mp3" in log["summary"]
    assert not list((tmp_path / "inbox").glob(".watcherd-doctor-*")), "the probe is removed"
    assert text.returncode == 0 and text.stdout.rstrip().endswith("All is well.")
    assert "OK    model          tiny.en: loads" in text.stdout


def test_unreadable_and_missing_inboxes_are_named_with_what_to_do(tmp_path, model_cache):
    good, locked, missing = tmp_path / "good", tmp_path / "locked", tmp_path / "missing"
    good.mkdir()
    locked.mkdir()
    locked.chmod(0)
    config = write_config(tmp_path, model_cache, inboxes=[str(good), str(locked), str(missing)])
    try:  # as the daemon's user would be: root's powers over permissions dropped
        result, report = run_doctor(config, tmp_path, preexec_fn=without_root_powers())
        text = run_cli("doctor", config=config, home=tmp_path, preexec_fn=without_root_powers())
    finally:
        locked.chmod(0o755)
    assert result.returncode == 1 and report["ok"] is False
    assert findings(report, "inbox", str(good))[0]["status"] == "ok"
    (denied,) = findings(report, "inbox", str(locked))
    assert denied["status"] == "fail"
    assert denied["summary"].endswith("cannot list it: Permission denied")
    assert f"chmod u+rwx {locked}" in denied["remedy"] and "d---------" in denied["remedy"]
    (absent,) = findings(report, "inbox", str(missing))
    assert (absent["status"], absent["summary"]) == ("warn", f"{missing}: does not exist")
    assert f"mkdir -p {missing}" in absent["remedy"]
    assert text.returncode == 1 and "problems need attention." in text.stdout
    assert "→ Create it: mkdir -p" in text.stdout and "FAIL  inbox" in text.stdout


@pytest.fixture
def full_disk(tmp_path):
    """A 512 KiB tmpfs, filled up: a disk that is really full."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    (mount / "inbox").mkdir()
    with pytest.raises(OSError) as full, (mount / "filler").open("wb") as f:
        for _ in range(1024):
            f.write(b"\0" * 4096)
            f.flush()
    assert full.value.errno == errno.ENOSPC
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_an_inbox_on_a_full_disk_fails_the_write_and_the_disk_checks(
    tmp_path, model_cache, full_disk
):
    inbox = full_disk / "inbox"
    config = write_config(tmp_path, model_cache, inboxes=[str(inbox)])
    result, report = run_doctor(config, tmp_path)
    assert result.returncode == 1
    (finding,) = findings(report, "inbox", str(inbox))
    assert finding["status"] == "fail"
    assert finding["summary"].endswith("cannot write in it: No space left on device")
    assert "disk is full" in finding["remedy"]
    (disk,) = [f for f in findings(report, "disk") if f"inbox {inbox}" in f["summary"]]
    assert disk["status"] == "fail" and disk["summary"].startswith("0 B free of 524 KB")
    assert "Free space there" in disk["remedy"]
    assert not list(inbox.iterdir()), "the probe left nothing behind"


def test_a_bad_configuration_is_a_finding_not_a_traceback(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('quiet_seconds = "soon"\n')
    result, report = run_doctor(config, tmp_path)
    assert result.returncode == 1
    (finding,) = report["findings"]
    assert finding["check"] == "configuration" and finding["status"] == "fail"
    assert "'soon'" in finding["summary"] and "quiet_seconds" in finding["summary"]
    assert str(config) in finding["remedy"]


def test_a_model_that_cannot_be_found_says_what_to_set(tmp_path, model_cache):
    config = write_config(tmp_path, model_cache, model="no-such-model")
    (tmp_path / "inbox").mkdir()
    result, report = run_doctor(config, tmp_path)
    assert result.returncode == 1
    (model,) = findings(report, "model")
    assert model["status"] == "fail" and "unknown model 'no-such-model'" in model["summary"]
    assert "tiny.en" in model["remedy"]


def test_the_reference_blas_is_a_problem_with_its_fix(tmp_path, model_cache):
    config = write_config(tmp_path, model_cache)
    (tmp_path / "inbox").mkdir()
    env = cli_env(tmp_path) | {"_WATCHERD_BLAS_REEXEC": "1"}  # as if the re-exec found none
    env.pop("LD_PRELOAD", None)
    result, report = run_doctor(config, tmp_path, env=env)
    blas = findings(report, "compute", "blas")[0]
    assert blas["status"] == "warn" and "reference BLAS" in blas["summary"]
    assert "libopenblas0-pthread" in blas["remedy"] and result.returncode == 1


def test_an_agent_that_runs_another_interpreter_or_config_is_named(tmp_path, model_cache, engine):
    config = write_config(tmp_path, model_cache)
    (tmp_path / "inbox").mkdir()
    plist = tmp_path / "Library" / "LaunchAgents" / "com.watcherd.agent.plist"
    plist.parent.mkdir(parents=True)
    old_python = tmp_path / "old-venv" / "bin" / "python"
    old_python.parent.mkdir(parents=True)
    old_python.symlink_to("/usr/bin/true")
    plist.write_bytes(plistlib.dumps({
        "Label": "com.watcherd.agent",
        "ProgramArguments": [str(old_python), "-m", "watcherd", "run", "--config",
                             str(tmp_path / "old.toml")],
    }))  # fmt: skip
    running = 'case "$1" in print) printf "state = running\\n\\tpid = 4242\\n" ;; esac'
    env = stand_ins(tmp_path, launchctl=running)
    _, report = run_doctor(config, tmp_path, "--manager", "launchd", env=env)
    (service,) = findings(report, "service")
    assert service["status"] == "warn" and str(plist) in service["summary"]
    assert (
        f"runs the interpreter {old_python}, not this one ({sys.executable})"
        in (service["summary"])
    )
    assert f"reads {tmp_path / 'old.toml'}, not {config}" in service["summary"]
    assert "`watcherd service install`" in service["remedy"]

    installed = run_cli("service", "install", "--manager", "launchd", config=config,
                        home=tmp_path, env=env)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    result, report = run_doctor(config, tmp_path, "--manager", "launchd", env=env)
    (service,) = findings(report, "service")
    assert service["status"] == "ok" and "(pid 4242)" in service["summary"], service
    assert result.returncode == 0, report


def test_a_unit_installed_but_stopped_says_how_to_start_it(tmp_path, model_cache, engine):
    config = write_config(tmp_path, model_cache)
    (tmp_path / "inbox").mkdir()
    stopped = 'case "$1 $2" in "--user show") printf "ActiveState=failed\\nMainPID=0\\n" ;; esac'
    env = stand_ins(tmp_path, systemctl=stopped)
    installed = run_cli("service", "install", "--manager", "systemd", config=config,
                        home=tmp_path, env=env)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    result, report = run_doctor(config, tmp_path, "--manager", "systemd", env=env)
    (service,) = findings(report, "service")
    assert service["status"] == "warn" and "installed but not running" in service["summary"]
    assert "watcherd service start" in service["remedy"] and result.returncode == 1


def test_an_inbox_only_the_daemon_cannot_list_is_reported_from_its_log(
    tmp_path, model_cache, engine
):
    """Your terminal may read a folder that the daemon may not (on a Mac: privacy
    permission is per program). The daemon says so in its log; doctor reads it there."""
    config = write_config(tmp_path, model_cache, scan_interval_seconds=1)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    inbox.chmod(0)
    proc = start_daemon(config, tmp_path, preexec_fn=without_root_powers())
    try:
        wait_for(lambda: log_events(tmp_path, "inbox_unreadable"), 30, message="the report")
        _, report = run_doctor(config, tmp_path)  # with root's powers: it can list it
        (finding,) = findings(report, "inbox")
        assert finding["status"] == "fail"
        assert "the daemon (at " in finding["summary"]
        assert finding["summary"].endswith("cannot list it: Permission denied")
        inbox.chmod(0o755)
        wait_for(lambda: log_events(tmp_path, "inbox_readable"), 30, message="recovery")
        _, report = run_doctor(config, tmp_path)
        assert findings(report, "inbox")[0]["status"] == "ok"
    finally:
        inbox.chmod(0o755)
        stop_daemon(proc)
    assert len(log_events(tmp_path, "inbox_unreadable")) == 1, "said once, not every scan"


# --- a Mac's privacy protection, described to the checks ------------------------------


@pytest.fixture
def mac(tmp_path) -> Host:
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    return Host(system="darwin", home=home, python=sys.executable)


def test_a_protected_folder_the_agent_is_refused_gets_the_privacy_settings_steps(mac):
    inbox = mac.home / "Documents" / "Inbox"
    inbox.mkdir()
    # A refusal by privacy protection is EPERM; an immutable folder refuses writes so.
    if subprocess.run(["chattr", "+i", str(inbox)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        finding = doctor.check_inbox(inbox, mac, "/agent/bin/python")
    finally:
        subprocess.run(["chattr", "-i", str(inbox)], check=True)
    assert finding.status == "fail"
    assert finding.summary.endswith("cannot write in it: Operation not permitted")
    assert "macOS keeps your Documents folder private" in finding.remedy
    assert "Privacy & Security → Full Disk Access" in finding.remedy
    assert "/agent/bin/python" in finding.remedy and "service restart" in finding.remedy


def test_a_protected_folder_doctor_can_read_still_explains_the_agent_needs_its_own_grant(mac):
    inbox = mac.home / "Documents" / "Inbox"
    inbox.mkdir()
    (inbox / "talk.m4a").write_bytes(b"x")
    finding = doctor.check_inbox(inbox, mac, "/agent/bin/python")
    assert finding.status == "info" and "your terminal's access" in finding.summary
    assert "/agent/bin/python" in finding.remedy
    refused = {"event": "inbox_unreadable", "errno": errno.EPERM, "timestamp": "T",
               "error": "Operation not permitted"}  # fmt: skip
    finding = doctor.check_inbox(inbox, mac, "/agent/bin/python", refused)
    assert finding.status == "fail"
    assert finding.summary == f"{inbox}: the daemon (at T) cannot list it: Operation not permitted"
    assert "Full Disk Access" in finding.remedy


def test_folders_outside_the_protected_places_need_no_grant(mac, tmp_path):
    inbox = mac.home / "Transcribe" / "inbox"
    inbox.mkdir(parents=True)
    assert doctor.check_inbox(inbox, mac, sys.executable).status == "ok"
    linux = Host(system="linux", home=mac.home, python=sys.executable)
    assert doctor.check_inbox(mac.home / "Documents", linux, sys.executable).status == "ok"


def test_each_protected_place_is_named(mac):
    from watcherd.privacy import protected_location

    home = mac.home
    assert protected_location(home / "Desktop" / "x", home) == "your Desktop"
    assert protected_location(home / "Downloads", home) == "your Downloads folder"
    icloud = home / "Library" / "Mobile Documents" / "com~apple~CloudDocs" / "in"
    assert protected_location(icloud, home) == "iCloud Drive"
    assert protected_location(Path("/Volumes/USB/in"), home).startswith("a removable")
    assert protected_location(home / "Documentsx", home) is None
    assert protected_location(home / "Music", home) is None
