"""The CPU path's own promises, beyond the compute contract (`test_compute.py`): encoding
ahead shares the cores with a busy caller, and everything built from a model goes with it."""

from __future__ import annotations

import gc
import os
import weakref

import numpy as np

from watcherd.engine import lightning
from watcherd.engine.audio import mel
from watcherd.engine.audio.chunks import Chunk
from watcherd.engine.audio.decode import load_audio
from watcherd.engine.compute.encoder_graph import EncoderGraph
from watcherd.engine.model import models
from watcherd.engine.options import DecodeOptions


def test_encoding_ahead_leaves_a_core_to_a_busy_caller(engine, audio_dir, monkeypatch):
    """A window encoding beside a caller that is cutting chunks or decoding runs on one
    core; one the caller waits for runs on every core."""
    loaded = engine.load()
    window = mel.window(Chunk(0, load_audio(audio_dir / "jfk.flac")), loaded.model.dims.n_mels)
    threads = []
    real_window = EncoderGraph.window

    def spy(graph, mel_window):
        threads.append(graph.graph.threads)
        return real_window(graph, mel_window)

    monkeypatch.setattr(EncoderGraph, "window", spy)
    encoding = loaded.compute.encoding()
    try:
        beside, waited = encoding.batch(), encoding.batch()
        with encoding.busy():
            beside.add(window)
            beside.windows[0].result()  # it started, and ran, while the caller was busy
        waited.add(window)
        features = [beside.features(), waited.features()]
    finally:
        encoding.close()
    assert threads == [1, os.cpu_count()]
    np.testing.assert_allclose(features[0], features[1], atol=1e-4)


def test_a_model_that_leaves_the_cache_takes_its_compute_and_decoders(
    engine, model_cache, audio_dir
):
    # A second copy of the model, outside the cache, as when inboxes cycle through more
    # models than the cache keeps.
    loaded = models.load("tiny.en", model_cache, engine.load().dtype)
    result = lightning.transcribe(loaded, audio_dir / "jfk.flac", DecodeOptions())
    assert result.segments and loaded.decoders and loaded.compute.name == "cpu"
    graph = weakref.ref(loaded.compute.encoder_graphs[0])
    model = weakref.ref(loaded.model)
    del loaded, result
    gc.collect()
    assert model() is None, "nothing keeps the dropped model alive"
    assert graph() is None, "nor its encoder graphs"
