"""Whisper's tests of a decoded row, and the temperature fallback for rows that fail them.

A row fails when its text is repetitive (compresses too well) or improbable; failed rows,
and only they, are decoded again at rising temperatures. A row is silence when the model
says there is no speech and its text does not convince; silent rows give no text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from mlx_whisper.decoding import compression_ratio

from watcherd.engine.decoding.decoder import BatchDecoder, RowResult
from watcherd.engine.options import DecodeOptions


def failed(result: RowResult, text: str, options: DecodeOptions) -> bool:
    """Whisper's fallback test: repetitive (compressible) or improbable output."""
    threshold = options.compression_ratio_threshold
    if threshold and compression_ratio(text) > threshold:
        return True
    return options.logprob_threshold is not None and result.avg_logprob < options.logprob_threshold


def silent(result: RowResult, options: DecodeOptions, final: bool = False) -> bool:
    """No speech in this row, by any of three tests: Whisper's (the model says no speech
    and the text is improbable); doubt (the model leans to no speech and the text is not
    clearly likely); and, once the fallback is over (`final`), every temperature failed
    and the lower `fallback_no_speech_threshold` is passed."""
    no_speech, logprob = result.no_speech_prob, result.avg_logprob
    if np.isnan(no_speech):
        return False

    def above(threshold: float | None) -> bool:
        return threshold is not None and no_speech > threshold

    floor = options.logprob_threshold
    improbable = floor is None or logprob < floor
    if above(options.no_speech_threshold) and improbable:
        return True
    unsure = options.doubt_logprob_threshold
    if above(options.doubt_no_speech_threshold) and unsure is not None and logprob < unsure:
        return True
    failed = final and floor is not None and improbable
    return failed and above(options.fallback_no_speech_threshold)


def without_weak_tail(result: RowResult, text: str, options: DecodeOptions) -> RowResult:
    """A row that was refused its end (`HoldEnd`) and went on, cut back to where it wanted
    to end if what it went on with fails Whisper's test (improbable or repetitive): music
    or noise the row would have left alone. The stretch is then decoded again on its own."""
    if result.held_at is None:
        return result
    tail = result.token_logprobs[result.held_at :]
    weak = options.logprob_threshold is not None and (
        not tail or float(np.mean(tail)) < options.logprob_threshold
    )
    threshold = options.compression_ratio_threshold
    if not weak and not (threshold and compression_ratio(text) > threshold):
        return result
    kept = result.token_logprobs[: result.held_at]
    return replace(result, tokens=result.tokens[: result.held_at], token_logprobs=kept,
                   avg_logprob=float(np.mean(kept)) if kept else 0.0, held_at=None)  # fmt: skip


def best(attempts: list[RowResult], texts: list[str], options: DecodeOptions) -> RowResult:
    """When every temperature failed, the likeliest attempt that is not repetitive (as
    faster-whisper does), rather than the last, most random one."""
    threshold = options.compression_ratio_threshold
    fluent = [a for a, t in zip(attempts, texts, strict=True)
              if not threshold or compression_ratio(t) <= threshold]  # fmt: skip
    return max(fluent or attempts, key=lambda a: a.avg_logprob)


def decode_with_fallback(
    decoder: BatchDecoder,
    features,
    prefix: list[int],
    options: DecodeOptions,
    check: Callable[[], None] | None = None,
    cross_kv=None,
    hold: np.ndarray | None = None,
    seeds: list[int] | None = None,
) -> list[RowResult]:
    """Decode every row greedily; retry only the rows that fail, at higher temperatures.
    `cross_kv`: the features' cross-attention keys/values, if the caller has them already.
    `hold`: see `BatchDecoder.decode`; the first decode only. `seeds`: each row's seed for
    its sampled retries (what it reads then depends on nothing else in the batch)."""
    temperatures = options.temperatures or (0.0,)
    seeds = seeds or list(range(features.shape[0]))
    cross_kv = cross_kv or decoder.cross_kv(features)
    results = decoder.decode(cross_kv, prefix, temperatures[0], check=check, hold=hold)
    del cross_kv  # the retries need only their rows' keys/values

    def text(result: RowResult, start: int = 0) -> str:
        return decoder.tokenizer.decode([t for t in result.tokens[start:] if t < decoder.eot])

    results = [r if r.held_at is None else without_weak_tail(r, text(r, r.held_at), options)
               for r in results]  # fmt: skip

    attempts: dict[int, list[RowResult]] = {}  # a failed row's attempts so far
    retry = list(range(len(results)))
    for temperature in (*temperatures[1:], None):
        retry = [i for i in retry
                 if failed(results[i], text(results[i]), options)
                 and not silent(results[i], options)]  # fmt: skip
        for i in retry:
            attempts.setdefault(i, []).append(results[i])
        if not retry:
            return results
        if temperature is None:  # every temperature failed these rows
            break
        subset = features[decoder.compute.xp.array(retry)]
        again = decoder.decode(decoder.cross_kv(subset), prefix, temperature, check=check,
                               seeds=[seeds[i] for i in retry])  # fmt: skip
        for i, result in zip(retry, again, strict=True):
            results[i] = result
    for i in retry:
        results[i] = best(attempts[i], [text(a) for a in attempts[i]], options)
    return results
