"""Speaker labels in every format, put onto the words by their timestamps (no model)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from watcherd import outputs
from watcherd.diarize.attribution import attribute, name_speakers
from watcherd.subtitles import Layout
from watcherd.transcript import Segment, Transcript, Turn, Word

FORMATS = ("txt", "srt", "vtt", "json")


def w(start: float, end: float, word: str) -> Word:
    return Word(start, end, word, 0.9)


def interview() -> Transcript:
    """The host greets and the guest answers inside the first segment; a third segment has
    no word timings."""
    return Transcript(
        source="/tmp/talk.m4a",
        segments=(
            Segment(
                0.0,
                4.2,
                " Good morning, and welcome to the show.",
                (
                    w(0.0, 0.6, " Good"),
                    w(0.6, 1.1, " morning,"),
                    w(1.2, 1.5, " and"),
                    w(1.5, 2.0, " welcome"),
                    w(2.0, 2.3, " to"),
                    w(2.3, 2.6, " the"),
                    w(2.6, 4.2, " show."),
                ),  # fmt: skip
                -0.2,
                0.01,
            ),
            Segment(
                4.5,
                7.0,
                " Thanks for having me.",
                (
                    w(4.5, 5.0, " Thanks"),
                    w(5.0, 5.4, " for"),
                    w(5.4, 6.0, " having"),
                    w(6.0, 7.0, " me."),
                ),  # fmt: skip
                -0.3,
                0.02,
            ),
            Segment(7.2, 9.0, " Without words here.", (), -0.3, 0.02),
        ),
        language="en",
        model="tiny.en",
        audio_seconds=9.5,
        processing_seconds=0.5,
        backend="lightning",
    )


# The diarizer numbers speakers its own way: here the guest is its speaker 0.
TURNS = [Turn(0.0, 1.15, 1), Turn(1.15, 4.3, 0), Turn(4.4, 9.2, 1)]


def labelled() -> Transcript:
    return attribute(interview(), TURNS)


def test_without_diarization_every_format_is_byte_identical_to_before():
    # sha256 of each format as rendered by main at 961e92d, before speakers existed.
    before = {
        ("txt", False): "a49dcc4b6f4b5f4c3b29753a6ed2d66e237c2ae7170e8cc7e5cf17fd19b4d28f",
        ("txt", True): "a49dcc4b6f4b5f4c3b29753a6ed2d66e237c2ae7170e8cc7e5cf17fd19b4d28f",
        ("srt", False): "27f9ec792b629b1aa24f0057077ab3b33f70508b8ae503ce31fc09250c31087b",
        ("srt", True): "c0cf8dfa5a88b0ea5b7d3e05a9e5f40329cff664b7e76c3cbf58ee0efbf4460d",
        ("vtt", False): "d3a34ddce144d52b2689ca03a99af1e38bca1403cf480900d8f83b4169c50fd8",
        ("vtt", True): "f3b01ecbb341fdb5549441e9d201f44fcc804742d3d4b904aadd037fe9ab7b6f",
        ("json", False): "6bcd218b8c9b9bb0d24ead5905347776162dce9f24e5ea7a19a66ddf48f2c4e9",
        ("json", True): "6bcd218b8c9b9bb0d24ead5905347776162dce9f24e5ea7a19a66ddf48f2c4e9",
    }
    for fmt in FORMATS:
        for highlight in (False, True):
            layout = Layout(max_line_chars=16, highlight_words=True) if highlight else Layout()
            text = outputs.render(fmt, interview(), outputs.Style(subtitles=layout))
            assert hashlib.sha256(text.encode()).hexdigest() == before[fmt, highlight], fmt


def test_a_segment_is_split_where_the_speaker_changes_between_words():
    segments = labelled().segments
    assert [(s.text, s.speaker) for s in segments] == [
        (" Good morning,", "Speaker 1"),
        (" and welcome to the show.", "Speaker 2"),
        (" Thanks for having me.", "Speaker 1"),
        (" Without words here.", "Speaker 1"),
    ]
    assert (segments[0].start, segments[0].end) == (0.0, 1.1)
    assert (segments[1].start, segments[1].end) == (1.2, 4.2)
    assert all(word.speaker == s.speaker for s in segments for word in s.words)


def test_speakers_are_numbered_in_order_of_first_appearance():
    t = labelled()
    assert t.speakers == ("Speaker 1", "Speaker 2")
    assert [turn.speaker for turn in t.turns] == [0, 1, 0]


def test_txt_has_one_paragraph_per_turn():
    assert outputs.render_txt(labelled()) == (
        "Speaker 1: Good morning,\n"
        "\n"
        "Speaker 2: and welcome to the show.\n"
        "\n"
        "Speaker 1: Thanks for having me. Without words here.\n"
    )


def test_vtt_tags_every_cue_with_its_voice():
    text = outputs.render_vtt(labelled())
    cues = text.split("\n\n")[1:]
    assert [c.splitlines()[1] for c in cues] == [
        "<v Speaker 1>Good morning,",
        "<v Speaker 2>and welcome to the show.",
        "<v Speaker 1>Thanks for having me.",
        "<v Speaker 1>Without words here.",
    ]


def test_srt_prefixes_only_the_cue_that_starts_a_turn():
    text = outputs.render_srt(labelled())
    assert [block.splitlines()[2] for block in text.split("\n\n")] == [
        "Speaker 1: Good morning,",
        "Speaker 2: and welcome to the show.",
        "Speaker 1: Thanks for having me.",
        "Without words here.",
    ]


def test_highlighted_srt_keeps_the_prefix_on_each_copy_of_the_first_cue():
    text = outputs.render_srt(labelled(), Layout(highlight_words=True))
    first_lines = [block.splitlines()[2] for block in text.split("\n\n")]
    assert first_lines[:2] == ["Speaker 1: <u>Good</u> morning,", "Speaker 1: Good <u>morning,</u>"]


def test_json_has_a_speaker_on_each_segment_and_word_and_the_speakers_list():
    data = json.loads(outputs.render_json(labelled()))
    assert data["speakers"] == ["Speaker 1", "Speaker 2"]
    assert [s["speaker"] for s in data["segments"]] == [
        "Speaker 1",
        "Speaker 2",
        "Speaker 1",
        "Speaker 1",
    ]
    assert [w["speaker"] for w in data["segments"][1]["words"]] == ["Speaker 2"] * 5


def test_rttm_lists_the_turns():
    assert outputs.render_rttm(labelled()) == (
        "SPEAKER talk 1 0.000 1.150 <NA> <NA> Speaker_1 <NA> <NA>\n"
        "SPEAKER talk 1 1.150 3.150 <NA> <NA> Speaker_2 <NA> <NA>\n"
        "SPEAKER talk 1 4.400 4.800 <NA> <NA> Speaker_1 <NA> <NA>\n"
    )


def speaker_of(t: Transcript, word: str) -> str | None:
    return next(w.speaker for s in t.segments for w in s.words if w.word == word)


def test_a_word_in_a_pause_goes_to_the_nearest_turn():
    t = attribute(interview(), [Turn(0.0, 5.5, 0), Turn(8.0, 9.0, 1)])
    # "me." (6.0-7.0) lies in no turn; the turn ending at 5.5 is nearer than the one at 8.0
    assert speaker_of(t, " me.") == "Speaker 1"
    t = attribute(interview(), [Turn(0.0, 5.5, 0), Turn(7.2, 9.0, 1)])
    assert speaker_of(t, " me.") == "Speaker 2"


def test_no_turns_at_all_give_one_speaker():
    t = attribute(interview(), [])
    assert t.speakers == ("Speaker 1",) and {s.speaker for s in t.segments} == {"Speaker 1"}


def test_named_speakers_replace_the_numbers():
    t = attribute(interview(), TURNS, names={1: "Ada"})
    assert t.speakers == ("Ada", "Speaker 2")
    assert outputs.render_txt(t).startswith("Ada: Good morning,\n")


def test_a_voice_is_named_only_when_it_matches_a_reference_closely_enough():
    rng = np.random.default_rng(0)
    ada, grace, other = (v / np.linalg.norm(v) for v in rng.normal(size=(3, 192)))
    voices = np.stack([grace + 0.1 * ada, other])
    voices /= np.linalg.norm(voices, axis=1, keepdims=True)
    assert name_speakers(voices, {"Ada": ada, "Grace": grace}) == {0: "Grace"}


@pytest.mark.parametrize("fmt", [*FORMATS, "md"])
def test_a_single_speaker_still_gets_labels(fmt):
    t = attribute(interview(), [Turn(0.0, 9.5, 0)])
    assert "Speaker 1" in outputs.render(fmt, t)
    assert "Speaker 2" not in outputs.render(fmt, t)


def test_paragraph_txt_and_markdown_name_the_speaker_of_each_paragraph():
    t = labelled()
    txt = outputs.render("txt", t, outputs.Style(txt_layout="paragraphs"))
    assert [line.split(":")[0] for line in txt.split("\n\n")] == [
        "Speaker 1", "Speaker 2", "Speaker 1"
    ]  # fmt: skip
    md = outputs.render("md", t)
    assert "speakers:\n- Speaker 1\n- Speaker 2\n" in md
    assert md.count("**Speaker 1:**") == 2 and md.count("**Speaker 2:**") == 1
