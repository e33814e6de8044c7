"""Language detection and translation with the multilingual `base` model: real speech."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers import normalise, write_wav

from watcherd.engine import DecodeOptions, Engine, ModelError
from watcherd.engine.audio import chunks, mel
from watcherd.engine.audio.decode import SAMPLE_RATE, load_audio
from watcherd.engine.decoding import language
from watcherd.outputs import render_json

FRENCH, SPANISH = "readalongs_ej-fra.m4a", "mls_es_13697_11991_000000.opus"
RATE = SAMPLE_RATE


@pytest.fixture(scope="module")
def base(model_cache) -> Engine:
    engine = Engine("base", model_cache)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def translated(base, audio_dir) -> dict:
    options = DecodeOptions(task="translate")
    return {name: base.transcribe(audio_dir / name, options) for name in (FRENCH, SPANISH)}


def _english_share(text: str) -> float:
    """The share of words written in plain ASCII letters, as English is."""
    words = re.findall(r"\w+", text)
    return sum(w.isascii() for w in words) / max(len(words), 1)


def _shared(text: str, reference: str) -> float:
    """The share of `text`'s words that also occur in `reference`."""
    words, vocabulary = normalise(text), set(normalise(reference))
    return sum(w in vocabulary for w in words) / max(len(words), 1)


@pytest.mark.parametrize(("name", "code"), [(FRENCH, "fr"), (SPANISH, "es")])
def test_the_language_of_a_file_is_detected_and_reported(base, audio_dir, name, code):
    transcript = base.transcribe(audio_dir / name)
    assert transcript.language == code
    assert transcript.language_probability is not None and transcript.language_probability > 0.9
    data = json.loads(render_json(transcript))
    assert data["language"] == code
    assert data["language_probability"] == transcript.language_probability


def test_a_short_first_chunk_does_not_decide_the_language(base, audio_dir, tmp_path):
    """0.6 s of French, a long pause, then French: base calls the 0.6 s alone English;
    averaged over the batch's chunks, weighted by their length, it is French."""
    french = load_audio(audio_dir / FRENCH)
    head = french[10 * RATE : int(10.6 * RATE)]
    samples = np.concatenate([head, np.zeros(30 * RATE, np.float32), french[: 15 * RATE]])
    found = list(chunks.speech_chunks(iter([samples])))
    assert len(found) == 2 and found[0].seconds < 2, "the short chunk is a chunk of its own"
    loaded = base.load()
    features = loaded.compute.encode([mel.window(found[0], loaded.model.dims.n_mels)])
    alone, _ = language.detect(loaded.compute, features, [found[0].seconds])
    assert alone != "fr", "the first chunk alone misleads: the averaging is what helps"
    transcript = base.transcribe(write_wav(tmp_path / "pause.wav", samples))
    assert transcript.language == "fr" and transcript.language_probability > 0.8


def test_a_language_setting_skips_detection(base, audio_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("detection ran although the language was set")

    monkeypatch.setattr(language, "detect", refuse)
    transcript = base.transcribe(audio_dir / SPANISH, DecodeOptions(language="es"))
    assert transcript.language == "es" and transcript.language_probability is None
    assert "sorpresa" in transcript.text.lower()


def test_an_english_only_model_has_no_detected_probability_and_refuses_french(engine, audio_dir):
    transcript = engine.transcribe(audio_dir / "jfk.flac")
    assert transcript.language == "en" and transcript.language_probability is None
    with pytest.raises(ModelError, match="English-only"):
        engine.transcribe(audio_dir / "jfk.flac", DecodeOptions(language="fr"))


@pytest.mark.parametrize("name", [FRENCH, SPANISH])
def test_translation_gives_english_and_names_the_source_language(translated, manifest, name):
    transcript = translated[name]
    assert transcript.task == "translate"
    assert transcript.language == manifest[name]["language"], "the source language"
    text = transcript.text
    assert _english_share(text) > 0.95, text
    # The source-language transcript shares ~60-80% of its words with the reference.
    assert _shared(text, manifest[name]["reference"]) < 0.3, text


def test_the_french_translation_says_what_the_speaker_said(translated):
    words = set(normalise(translated[FRENCH].text))
    expected = {"hello", "my", "name", "programmer", "team", "career", "translation",
                "learning", "english", "natural", "language", "parallel", "tests"}  # fmt: skip
    assert len(expected & words) >= 10, translated[FRENCH].text
    assert "in parallel" in translated[FRENCH].text.lower(), "the last chunk is not lost"


def test_the_spanish_translation_covers_the_whole_clip(translated):
    text = translated[SPANISH].text.lower()
    assert "surprise" in text and "disgust" in text, text
    assert "lips" in text or "carlos" in text, text
