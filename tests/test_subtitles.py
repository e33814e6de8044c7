"""Subtitle layout: line limits, cue length, splitting, no lost words, highlighting."""

from __future__ import annotations

import random

import pytest

from watcherd import outputs
from watcherd.subtitles import Cue, Layout, cues
from watcherd.transcript import Segment, Transcript, Word

VOCAB = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "country,",
    "river.",
    "people",
    "who",
    "lived",
    "there",
    "said:",
    "yes!",
    "wonderful",
    "extraordinarily",
    "unremarkable",
    "morning",
    "evening;",
    "we",
    "it",
    "was",
    "is",
    "never",
    "always",
]


def worded(tokens: list[str], start: float = 0.0, step: float = 0.3, pauses=None) -> Segment:
    """A segment with a word per token, `step` s each, plus extra `pauses` after some tokens."""
    words, t = [], start
    for i, tok in enumerate(tokens):
        words.append(Word(t, t + step * 0.8, f" {tok}", 0.9))
        t += step + (pauses or {}).get(i, 0.0)
    return Segment(start, t, "".join(w.word for w in words), tuple(words))


def generated() -> list[list[Segment]]:
    """Several transcripts: short and long segments, with and without words."""
    rng = random.Random(7)
    out = []
    for _ in range(12):
        segments, t = [], 0.0
        for _ in range(rng.randint(1, 6)):
            tokens = [rng.choice(VOCAB) for _ in range(rng.randint(1, 60))]
            if rng.random() < 0.5:
                seg = worded(tokens, t, rng.uniform(0.15, 0.6), {rng.randrange(len(tokens)): 1.5})
            else:
                seg = Segment(t, t + rng.uniform(0.5, 30.0), " " + " ".join(tokens))
            segments.append(seg)
            t = seg.end + rng.uniform(0.0, 2.0)
        out.append(segments)
    monologue = " ".join(VOCAB[i % len(VOCAB)] for i in range(80))
    out.append([Segment(0.0, 25.0, monologue)])  # 25 s without word timestamps
    out.append([worded(monologue.split(), 0.0, 25.0 / 80, {30: 0.8})])  # and with them
    return out


def text_of(cue_list: list[Cue]) -> list[str]:
    return " ".join(" ".join(c.lines) for c in cue_list).split()


def check(segments: list[Segment], layout: Layout) -> list[Cue]:
    result = cues(segments, layout)
    for c in result:
        assert 1 <= len(c.lines) <= layout.max_lines
        for line in c.lines:
            assert len(line) <= layout.max_line_chars or " " not in line
        assert c.end - c.start <= layout.max_cue_seconds + 1e-9 or len(c.text().split()) == 1
    for a, b in zip(result, result[1:], strict=False):
        assert a.start <= a.end <= b.start <= b.end
    return result


@pytest.mark.parametrize("layout", [Layout(), Layout(32, 1, 4.0), Layout(20, 3, 10.0)])
def test_limits_hold_and_no_word_is_lost_or_duplicated(layout):
    for segments in generated():
        result = check(segments, layout)
        assert text_of(result) == " ".join(s.text for s in segments).split()
        for seg in segments:  # the words of each segment stay in its own cues
            inside = [c for c in result if seg.start <= c.start and c.end <= seg.end]
            assert text_of(inside) == seg.text.split()


def test_no_cue_is_longer_than_seven_seconds_by_default():
    result = check([Segment(0.0, 25.0, " " + " ".join(["word"] * 30))], Layout())
    assert len(result) >= 4 and max(c.end - c.start for c in result) <= 7.0
    assert result[0].start == 0.0 and result[-1].end == 25.0


def test_a_short_segment_is_one_cue_with_the_segment_times():
    assert cues([Segment(1.0, 2.5, " Hello there.")]) == [Cue(1.0, 2.5, ("Hello there.",))]


def test_lines_are_balanced_and_break_after_punctuation_when_close():
    (cue,) = cues([Segment(0, 5, " " + " ".join(["word"] * 12))])
    assert cue.lines == ("word word word word word word", "word word word word word word")
    (cue,) = cues([Segment(0, 5, " I was there on time, but nobody else came to the meeting")])
    assert cue.lines == ("I was there on time,", "but nobody else came to the meeting")


def test_split_prefers_the_longest_pause():
    tokens = ["alpha", "bravo", "delta", "gamma", "kilo", "lima"] * 3
    segment = worded(tokens, pauses={5: 1.0})
    first, second = cues([segment])
    assert first.words[-1].word == " lima" and len(first.words) == 6
    assert first.end == segment.words[5].end  # real word times, not the pause
    assert second.start == segment.words[6].start


def test_split_prefers_sentence_punctuation():
    text = " One two three four five six. Seven eight nine ten eleven twelve thirteen fourteen"
    text += " fifteen"  # 89 characters: two cues
    first, second = cues([Segment(0.0, 6.0, text)])
    assert first.lines[-1].endswith("six.") and second.lines[0].startswith("Seven")


def test_without_words_times_are_proportional_to_characters():
    first, second = cues([Segment(10.0, 20.0, " aaaa bbbb cccc dddd")], Layout(9, 1))
    assert first.lines == ("aaaa bbbb",) and second.lines == ("cccc dddd",)
    assert first.end == second.start == pytest.approx(15.0)


def test_limits_are_configurable():
    text = " " + " ".join(["word"] * 12)
    assert len(cues([Segment(0, 5, text)], Layout(max_line_chars=100))[0].lines) == 1
    result = check([Segment(0, 5, text)], Layout(max_line_chars=14, max_lines=1))
    assert [c.lines for c in result] == [("word word word",)] * 4
    assert len(check([Segment(0, 5, text)], Layout(max_cue_seconds=1.0))) == 6  # 0.42 s a word
    with pytest.raises(ValueError):
        Layout(max_lines=0)


def test_a_very_long_word_gets_a_line_of_its_own_uncut():
    word = "Pneumonoultramicroscopicsilicovolcanoconiosis-like" * 2
    (cue,) = check([Segment(0, 4, f" It was {word} indeed")], Layout(max_lines=3))
    assert cue.lines == ("It was", word, "indeed")
    result = check([Segment(0, 4, f" It was {word} indeed")], Layout())  # 3 lines: 2 cues
    assert [line for c in result for line in c.lines] == ["It was", word, "indeed"]
    assert cues([Segment(0, 4, f" {word}")])[0].lines == (word,)


def test_a_word_lasting_longer_than_the_limit_is_one_cue():
    segment = Segment(0, 12, " Ahhh ok", (Word(0, 10, " Ahhh", 0.9), Word(10.5, 12, " ok", 0.9)))
    result = check([segment], Layout())
    assert [c.lines for c in result] == [("Ahhh",), ("ok",)]


def test_overlapping_segments_give_ordered_non_overlapping_cues():
    result = check([Segment(0, 3, " first one"), Segment(2, 4, " second one")], Layout())
    assert [(c.start, c.end) for c in result] == [(0, 3), (3, 4)]


def test_words_without_a_leading_space_stay_with_the_previous_word():
    words = (Word(0, 0.5, " I", 1), Word(0.5, 0.8, " don", 1), Word(0.8, 1, "'t", 1))
    (cue,) = cues([Segment(0, 1, " I don't", words)], Layout(max_line_chars=4, max_lines=2))
    assert cue.lines == ("I", "don't")


def test_words_that_disagree_with_the_text_fall_back_to_the_text():
    segment = Segment(0, 2, " Hello there.", (Word(0, 1, " Goodbye", 1),))
    assert cues([segment], Layout(highlight_words=True)) == [Cue(0, 2, ("Hello there.",))]


def highlighted() -> Transcript:
    words = (Word(0.5, 1.0, " Hello", 0.9), Word(1.2, 1.5, " <there>", 0.9))
    segment = Segment(0.0, 2.0, " Hello <there>", words)
    return Transcript("a.wav", (segment,), "en", "tiny", 2.0, 1.0)


def test_highlighted_srt_underlines_each_word_in_turn():
    srt = outputs.render_srt(highlighted(), Layout(highlight_words=True))
    assert srt == (
        "1\n00:00:00,000 --> 00:00:01,200\n<u>Hello</u> <there>\n\n"
        "2\n00:00:01,200 --> 00:00:02,000\nHello <u><there></u>\n"
    )


def test_highlighted_vtt_underlines_and_escapes():
    vtt = outputs.render_vtt(highlighted(), Layout(highlight_words=True))
    assert vtt == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.200\n<u>Hello</u> &lt;there&gt;\n\n"
        "00:00:01.200 --> 00:00:02.000\nHello <u>&lt;there&gt;</u>\n"
    )


def test_highlighting_is_off_by_default_and_needs_words():
    assert outputs.render_srt(highlighted()).count("<u>") == 0
    plain = Transcript("a.wav", (Segment(0, 2, " Hi you"),), "en", "tiny", 2.0, 1.0)
    assert "<u>" not in outputs.render_vtt(plain, Layout(highlight_words=True))


def test_highlighting_keeps_the_cue_lines_and_times():
    segment = worded(("one two three four five six seven eight nine ten " * 4).split())
    plain = cues([segment])
    marked = check([segment], Layout(highlight_words=True))
    assert len(marked) == len(segment.words)
    for c in plain:
        mine = [m for m in marked if c.start <= m.start and m.end <= c.end]
        assert mine[0].start == c.start and mine[-1].end == c.end
        assert {m.lines for m in mine} == {c.lines}
        assert [m.text().count("<u>") for m in mine] == [1] * len(c.words)


CHINESE = (
    "今天我们讨论一下这个项目的进展情况，以及下一步的计划安排。"
    "首先请大家看一下上周的数据，然后我们再决定是否需要调整方向。"
    "最后，我想感谢每一位同事的努力，没有你们就没有今天的成果！"
)


def columns(line: str) -> int:
    return sum(2 if "\u3000" <= c <= "\uffef" or "\u4e00" <= c <= "\u9fff" else 1 for c in line)


def check_cjk(result: list[Cue], text: str, layout: Layout) -> None:
    assert len(result) > 1, "a long segment is split"
    assert "".join("".join(c.lines) for c in result) == text, "no character lost or added"
    for c in result:
        assert len(c.lines) <= layout.max_lines
        assert all(columns(line) <= layout.max_line_chars for line in c.lines), c.lines
        assert all(line[0] not in "。，、！？" for line in c.lines), "punctuation starts no line"
        assert c.end - c.start <= layout.max_cue_seconds + 1e-9
    for a, b in zip(result, result[1:], strict=False):
        assert a.start <= a.end <= b.start <= b.end


def test_chinese_without_spaces_breaks_between_characters():
    layout = Layout()
    result = cues([Segment(0.0, 24.0, CHINESE)], layout)
    check_cjk(result, CHINESE, layout)
    assert max(columns(line) for c in result for line in c.lines) > 30, "lines are filled"


def test_chinese_words_without_spaces_keep_their_own_times():
    # Whisper's words for Chinese are characters or short runs, with no leading space.
    words = [Word(i * 0.2, i * 0.2 + 0.15, char, 0.9) for i, char in enumerate(CHINESE)]
    segment = Segment(0.0, len(CHINESE) * 0.2, CHINESE, tuple(words))
    layout = Layout(max_line_chars=32)
    result = cues([segment], layout)
    check_cjk(result, CHINESE, layout)
    for c in result:  # each cue starts when its first character is spoken
        first = CHINESE.index("".join(c.lines)[:8])
        assert c.start == pytest.approx(words[first].start)


def test_latin_words_and_quotes_inside_chinese_and_japanese_stay_whole():
    text = "我们用Python写代码、そして「テスト」を書きます。" * 4
    result = cues([Segment(0.0, 12.0, text)], Layout(max_line_chars=20))
    lines = [line for c in result for line in c.lines]
    assert "".join(lines) == text
    assert all("Pytho" not in line or "Python" in line for line in lines), lines
    assert not any(line.endswith("「") or line.startswith("」") for line in lines), lines


def test_an_opening_quote_stays_with_what_follows_it():
    result = cues([Segment(0.0, 6.0, "我说「好」吧。他说「不」。")], Layout(max_line_chars=5))
    lines = [line for c in result for line in c.lines]
    assert "".join(lines) == "我说「好」吧。他说「不」。"
    assert not any(line.endswith("「") for line in lines), lines
