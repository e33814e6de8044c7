"""No invented text: silence, noise and music give no lines; repetition loops are cut."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import wer, write_wav

from watcherd.engine import Engine
from watcherd.engine.decoding import prompt
from watcherd.engine.decoding.decoder import RowResult
from watcherd.engine.options import DecodeOptions
from watcherd.engine.quality import fallback
from watcherd.engine.quality.repetition import cut_loops, cut_segment_loops
from watcherd.transcript import Segment, Word

RATE = 16_000
NO_SPEECH = ["zeros.wav", "noise_-40dBFS.wav", "wts_empty.mp3", "lhotse_big_buck_bunny_small.mp4"]


@pytest.fixture(scope="module")
def no_speech(audio_dir, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("no_speech")
    noise = np.random.default_rng(0).standard_normal(20 * RATE) * 10 ** (-40 / 20)
    return {
        "zeros.wav": write_wav(folder / "zeros.wav", np.zeros(20 * RATE)),
        "noise_-40dBFS.wav": write_wav(folder / "noise_-40dBFS.wav", noise),
        **{name: audio_dir / name for name in NO_SPEECH[2:]},
    }


# --- silence, noise and music ---------------------------------------------------------


@pytest.mark.parametrize("vad", [True, False], ids=["vad", "no-vad"])
@pytest.mark.parametrize("name", NO_SPEECH)
def test_no_speech_gives_no_lines(model_cache, no_speech, name, vad):
    transcript = Engine("tiny.en", model_cache, vad=vad).transcribe(no_speech[name])
    assert transcript.segments == (), transcript.text


@pytest.mark.parametrize("name", ["noise_-40dBFS.wav", "lhotse_big_buck_bunny_small.mp4"])
@pytest.mark.parametrize("task", ["transcribe", "translate"])
def test_no_speech_gives_no_lines_with_a_multilingual_model_and_no_vad(
    model_cache, no_speech, name, task
):
    """Without VAD only the no-speech probability stands between music and invented text
    (base said "Hmm." for the cartoon's music, with P(no speech) = 0.58)."""
    engine = Engine("base", model_cache, vad=False)
    transcript = engine.transcribe(no_speech[name], DecodeOptions(task=task))
    assert transcript.segments == (), transcript.text


@pytest.mark.parametrize("vad", [True, False], ids=["vad", "no-vad"])
def test_speech_then_45_s_of_silence_gives_only_the_speech(model_cache, audio_dir, manifest, vad):
    name = "jfk_then_45s_silence.flac"
    transcript = Engine("tiny.en", model_cache, vad=vad).transcribe(audio_dir / name)
    assert wer(manifest[name]["reference"], transcript.text) <= 0.15, transcript.text
    assert max(s.end for s in transcript.segments) < 12.0


# --- the fallback ---------------------------------------------------------------------


def _row(avg_logprob: float, temperature: float) -> RowResult:
    return RowResult([], avg_logprob, 0.0, temperature)


def test_when_every_temperature_fails_the_likeliest_fluent_attempt_is_kept():
    attempts = [_row(-1.2, 0.0), _row(-0.2, 0.2), _row(-1.1, 0.4), _row(-3.0, 1.0)]
    texts = ["a fair try", "la " * 80, "a better try", "random words"]
    best = fallback.best(attempts, texts, DecodeOptions())
    assert best.temperature == 0.4, "the repetitive one is likelier, but a loop"
    assert fallback.best(attempts[1:2], texts[1:2], DecodeOptions()).temperature == 0.2


# --- repetition loops -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cut"),
    [
        ("Thank you. " * 12, "Thank you."),
        ("Thank you. Thank you, thank you. THANK YOU! Thank you. Thank you.", "Thank you."),
        ("So " + "the " * 20 + "end.", "So the end."),
        ("We went home. " + "Thank you. " * 7 + "Thank", "We went home. Thank you."),
        ("I'm going to the store today. " * 5, "I'm going to the store today."),
        ("ha" * 20, "ha"),
        ("谢谢大家。" * 10, "谢谢大家。"),
    ],
)
def test_a_loop_is_cut_to_its_first_occurrence(text, cut):
    assert cut_loops(text) == cut


@pytest.mark.parametrize(
    "text",
    [
        "No, no, no, no. I said no.",  # four times is still speech
        "We shall fight on the beaches, we shall fight on the landing grounds, we shall "
        "fight in the fields and in the streets, we shall fight in the hills.",
        "Very, very, very good.",
        "internationalization",
    ],
)
def test_normal_repetition_is_left_alone(text):
    assert cut_loops(text) is text


def test_reference_transcripts_are_never_touched(manifest):
    references = [row["reference"] for row in manifest.values() if row["reference"]]
    assert len(references) >= 10
    for reference in references:
        assert cut_loops(reference) is reference
        sentences = [Segment(i, i + 1, s) for i, s in enumerate(reference.split(". "))]
        assert cut_segment_loops(sentences) == sentences


def test_a_loop_across_segments_keeps_the_first_and_its_words():
    words = (Word(0.0, 0.4, " Thank", 0.9), Word(0.4, 0.8, " you.", 0.9))
    first = Segment(0.0, 1.0, " Hello. Thank you.", (Word(0.0, 0.0, " Hello.", 0.9), *words))
    loop = [Segment(i, i + 1.0, " Thank you.") for i in range(1, 9)]
    assert cut_segment_loops([first, *loop]) == [first]
    one = Segment(0.0, 9.0, "Thank you. " * 8, tuple(
        Word(i * 0.5, i * 0.5 + 0.5, w, 0.9) for i, w in enumerate([" Thank", " you."] * 8)
    ))  # fmt: skip
    (cut,) = cut_segment_loops([one])
    assert cut.text == "Thank you." and [w.word for w in cut.words] == [" Thank", " you."]
    assert cut.end == 1.0, "the segment ends with its last kept word"


def test_a_looping_row_is_cut_in_the_transcript(engine, audio_dir, monkeypatch):
    """Every row decodes to "Thank you." 25 times, at every temperature."""
    tokenizer = prompt.tokenizer(False, engine.load().num_languages, "en", "transcribe")
    looped = [tokenizer.timestamp_begin, *tokenizer.encode(" Thank you.") * 25,
              tokenizer.timestamp_begin + 1500]  # fmt: skip

    def decode(decoder, features, *args, **kwargs):
        return [RowResult(looped, -0.5, 0.0, 1.0) for _ in range(features.shape[0])]

    monkeypatch.setattr(fallback, "decode_with_fallback", decode)
    assert engine.transcribe(audio_dir / "jfk.flac").text == "Thank you."
