"""The `lightning` backend: batched decoding of VAD chunks, with bounded memory.

file ─PyAV─▶ 16 kHz blocks ─▶ VAD cut & merge (or quiet-point tiles) ─▶ chunks ≤ 30 s
     ─▶ log-mel per chunk ─▶ batches of B ─▶ encoder ─▶ batched greedy decoder
     ─▶ per-row temperature fallback ─▶ segments offset by each chunk's start

Each chunk is decoded on its own (no conditioning on the previous chunk's text), as in
WhisperX and faster-whisper's batched pipeline: that is what lets chunks run side by side,
and it also stops the repetition loops that conditioning feeds.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from itertools import islice

import mlx.core as mx
import numpy as np
import psutil
from mlx_whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram
from mlx_whisper.decoding import detect_language
from mlx_whisper.tokenizer import Tokenizer, get_tokenizer

from watcherd.engine import alignment, audio, chunks, encoder, repetition, segments
from watcherd.engine.decoder import TIME_PRECISION, BatchDecoder, RowResult
from watcherd.engine.models import LoadedModel
from watcherd.engine.options import DecodeOptions
from watcherd.engine.transcript import Segment

BLOCK_SECONDS = 60  # audio decoded per read; memory stays flat in the file's length
MAX_BATCH = 8
MEMORY_SHARE = 0.25  # of the available memory, for the batch's attention caches
GAP_SECONDS = 2.0  # skipped audio worth a second decode
GAP_MIN_RMS = 0.01  # about -40 dBFS: quieter stretches are silence
AUDIBLE_RMS = 0.001  # -60 dBFS: a chunk with nothing louder is not decoded at all

Progress = Callable[[float], None]


def auto_batch_size(loaded: LoadedModel, limit: int = MAX_BATCH) -> int:
    """As many rows as a quarter of the free memory holds, at most `limit`."""
    dims = loaded.model.dims
    itemsize = 2 if loaded.dtype == mx.float16 else 4
    per_row = dims.n_text_layer * 2 * (dims.n_audio_ctx + dims.n_text_ctx) * dims.n_text_state
    per_row = per_row * itemsize + dims.n_audio_ctx * dims.n_audio_state * itemsize * 4
    available = psutil.virtual_memory().available * MEMORY_SHARE
    return max(1, min(limit, int(available // per_row)))


def _decoder(loaded: LoadedModel, tokenizer: Tokenizer) -> BatchDecoder:
    key = (tokenizer.language, tokenizer.task)
    if key not in loaded.decoders:
        loaded.decoders[key] = BatchDecoder(loaded.model, tokenizer)
    return loaded.decoders[key]


def _tokenizer(loaded: LoadedModel, language: str | None, task: str) -> Tokenizer:
    if not loaded.multilingual:
        return get_tokenizer(False, num_languages=loaded.num_languages, language="en",
                             task="transcribe")  # fmt: skip
    return get_tokenizer(True, num_languages=loaded.num_languages, language=language, task=task)


def _mel(chunk: chunks.Chunk, n_mels: int) -> mx.array:
    samples = mx.array(chunk.samples[:N_SAMPLES])
    mel = log_mel_spectrogram(samples, n_mels=n_mels, padding=N_SAMPLES - samples.size)
    return mel[:N_FRAMES]


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _failed(result: RowResult, text: str, options: DecodeOptions) -> bool:
    """Whisper's fallback test: repetitive (compressible) or improbable output."""
    if (
        options.compression_ratio_threshold
        and compression_ratio(text) > options.compression_ratio_threshold
    ):
        return True
    return options.logprob_threshold is not None and result.avg_logprob < options.logprob_threshold


def _silent(result: RowResult, options: DecodeOptions, final: bool = False) -> bool:
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


def _without_weak_tail(result: RowResult, text: str, options: DecodeOptions) -> RowResult:
    """A row that was refused its end (`hold`) and went on, cut back to where it wanted to
    end if what it went on with fails Whisper's test (improbable or repetitive): music or
    noise the row would have left alone. The stretch is then decoded again on its own."""
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


def _best(attempts: list[RowResult], texts: list[str], options: DecodeOptions) -> RowResult:
    """When every temperature failed, the likeliest attempt that is not repetitive (as
    faster-whisper does), rather than the last, most random one."""
    threshold = options.compression_ratio_threshold
    fluent = [a for a, t in zip(attempts, texts, strict=True)
              if not threshold or compression_ratio(t) <= threshold]  # fmt: skip
    return max(fluent or attempts, key=lambda a: a.avg_logprob)


def decode_with_fallback(
    decoder: BatchDecoder,
    features: mx.array,
    prefix: list[int],
    options: DecodeOptions,
    check: Callable[[], None] | None = None,
    cross_kv: list[tuple[mx.array, mx.array]] | None = None,
    hold: np.ndarray | None = None,
) -> list[RowResult]:
    """Decode every row greedily; retry only the rows that fail, at higher temperatures.
    `cross_kv`: the features' cross-attention keys/values, if the caller has them already.
    `hold`: see `BatchDecoder.decode`; the first decode only."""
    temperatures = options.temperatures or (0.0,)
    cross_kv = cross_kv or decoder.cross_kv(features)
    results = decoder.decode(cross_kv, prefix, temperatures[0], check=check, hold=hold)
    del cross_kv  # the retries need only their rows' keys/values

    def text(result: RowResult, start: int = 0) -> str:
        return decoder.tokenizer.decode([t for t in result.tokens[start:] if t < decoder.eot])

    results = [r if r.held_at is None else _without_weak_tail(r, text(r, r.held_at), options)
               for r in results]  # fmt: skip

    attempts: dict[int, list[RowResult]] = {}  # a failed row's attempts so far
    retry = list(range(len(results)))
    for temperature in (*temperatures[1:], None):
        retry = [i for i in retry
                 if _failed(results[i], text(results[i]), options)
                 and not _silent(results[i], options)]  # fmt: skip
        for i in retry:
            attempts.setdefault(i, []).append(results[i])
        if not retry:
            return results
        if temperature is None:  # every temperature failed these rows
            break
        subset = features[mx.array(retry)]
        again = decoder.decode(decoder.cross_kv(subset), prefix, temperature, check=check)
        for i, result in zip(retry, again, strict=True):
            results[i] = result
    for i in retry:
        results[i] = _best(attempts[i], [text(a) for a in attempts[i]], options)
    return results


def _take(
    items: Iterator[chunks.Chunk], size: int, retries: deque[chunks.Chunk]
) -> Iterator[chunks.Chunk]:
    """The next batch of at most `size` chunks, one by one as they are cut, tails waiting
    in `retries` first, so no tail waits long; nothing when there is nothing left for now."""
    tails = [retries.popleft() for _ in range(min(size, len(retries)))]
    yield from tails
    yield from islice(items, size - len(tails))


def _cut(stream: Iterator[chunks.Chunk], ahead: encoder.Ahead) -> Iterator[chunks.Chunk]:
    """The stream's chunks, the encoder told that the caller is busy while each is cut."""
    while True:
        with ahead.busy():
            chunk = next(stream, None)
        if chunk is None:
            return
        yield chunk


def _audible(samples: np.ndarray) -> bool:
    """Whether any 100 ms rises above digital silence (-60 dBFS)."""
    return _peak_rms(samples) >= AUDIBLE_RMS


def _frame_rms(samples: np.ndarray) -> np.ndarray:
    """RMS level of each whole 100 ms of the samples."""
    frames = samples[: samples.size // 1600 * 1600].reshape(-1, 1600)
    return np.sqrt((frames**2).mean(axis=1))


def _peak_rms(samples: np.ndarray) -> float:
    levels = _frame_rms(samples)
    return float(levels.max()) if levels.size else 0.0


def _loud(samples: np.ndarray) -> bool:
    """Whether any 100 ms of these samples is above the silence level."""
    return _peak_rms(samples) >= GAP_MIN_RMS


def skipped(chunk: chunks.Chunk, parsed: list[Segment]) -> list[chunks.Chunk]:
    """Stretches of a chunk the decode skipped: gaps of GAP_SECONDS or more between its
    segments, or after the last complete one, that are not silent. Without the previous
    text as context Whisper sometimes jumps over a sentence, or ends early; sequential
    Whisper would seek back there, so these are decoded again, once."""
    if chunk.second_pass:
        return []
    rate = audio.SAMPLE_RATE
    spans, covered = [], 0.0
    for segment in parsed:
        begin = segment.start - chunk.start_seconds
        spans.append((covered, begin))
        covered = max(covered, segment.end - chunk.start_seconds)
    spans.append((covered, chunk.seconds))
    gaps = []
    for begin, end in spans:
        samples = chunk.samples[int(begin * rate) : int(end * rate)]
        if end - begin >= GAP_SECONDS and _loud(samples):
            gaps.append(chunks.Chunk(chunk.start + int(begin * rate), samples, True))
    return gaps


def hold(chunk: chunks.Chunk) -> int:
    """The timestamp (in steps of TIME_PRECISION into the chunk) before which its row may
    not end once it has spoken: ending there would leave GAP_SECONDS or more of loud audio,
    which `skipped` would decode again in a window of its own. Whisper sometimes ends early
    (it ends JFK's speech after "...for your country." even when more speech follows, as
    its training clip did); going on costs a few decoder steps, a second window costs an
    encoder pass and a decode that can only start once this one is done."""
    if chunk.second_pass:
        return 0
    loud = np.flatnonzero(_frame_rms(chunk.samples) >= GAP_MIN_RMS)
    if not loud.size:
        return 0
    until = min(chunk.seconds - GAP_SECONDS, loud[-1] * 0.1)
    return max(0, int(until / TIME_PRECISION))


def _settle(
    chunk: chunks.Chunk, parsed: list[Segment], complete: float
) -> tuple[list[Segment], list[chunks.Chunk]]:
    """The segments to keep from a row, and the stretches to decode again. A trailing
    segment with no closing timestamp is dropped only when its audio is decoded again."""
    closed = [p for p in parsed if p.end <= chunk.start_seconds + complete]
    again = skipped(chunk, closed)
    if len(closed) == len(parsed):
        return parsed, again
    tail_start = chunk.start_seconds + complete - 0.01
    if any(g.start_seconds >= tail_start for g in again):
        return closed, again
    return parsed, skipped(chunk, parsed)


def detect(loaded: LoadedModel, features: mx.array, weights: list[float]) -> tuple[str, float]:
    """The language of a batch of chunks, and its probability: every row's language
    probabilities averaged, weighted by its length. One short chunk alone is unreliable
    (base calls 0.6 s of French English, p = 0.71, or Turkish, Hindi...)."""
    tokenizer = get_tokenizer(True, num_languages=loaded.num_languages)
    _, probs = detect_language(loaded.model, features, tokenizer)
    total = sum(weights) or 1.0
    mean = {code: sum(w * p[code] for w, p in zip(weights, probs, strict=True)) / total
            for code in probs[0]}  # fmt: skip
    language = max(mean, key=mean.get)
    return language, float(mean[language])


def transcribe(
    loaded: LoadedModel,
    path,
    options: DecodeOptions,
    progress: Progress | None = None,
    *,
    vad: bool = True,
    batch_size: int | None = None,
) -> tuple[list[Segment], str, float | None, float]:
    """Transcribe a file; returns (segments, language, the language's probability if it
    was detected, audio seconds)."""
    report = progress or (lambda fraction: None)
    total = audio.probe_seconds(path) or 0.0
    decoded = [0]

    def blocks() -> Iterator[np.ndarray]:
        for block in audio.stream_audio(path, BLOCK_SECONDS * audio.SAMPLE_RATE):
            decoded[0] += block.size
            yield block

    stream = chunks.speech_chunks(blocks()) if vad else chunks.tiles(blocks())
    stream = (chunk for chunk in stream if _audible(chunk.samples))  # nothing to decode
    language = options.language if loaded.multilingual else "en"
    probability: float | None = None
    size = batch_size or auto_batch_size(loaded)
    n_mels = loaded.model.dims.n_mels
    found: list[Segment] = []
    last_fraction = 0.0

    def check() -> None:
        report(last_fraction)

    def finish(batch: list[chunks.Chunk], features: mx.array) -> None:
        """Decode an encoded batch; keep its segments, queue the stretches it skipped."""
        nonlocal language, probability, last_fraction
        if language is None:
            language, probability = detect(loaded, features, [c.seconds for c in batch])
        tokenizer = _tokenizer(loaded, language, options.task)
        prefix = list(tokenizer.sot_sequence)
        if options.initial_prompt:
            prompt = tokenizer.encode(" " + options.initial_prompt.strip())
            prefix = [
                tokenizer.sot_prev,
                *prompt[-(loaded.model.dims.n_text_ctx // 2 - 1) :],
                *prefix,
            ]
        decoder = _decoder(loaded, tokenizer)
        # Word timestamps reuse the decoder's cross-attention keys/values: kept only then.
        cross = decoder.cross_kv(features) if options.word_timestamps else None
        holds = np.array([hold(chunk) for chunk in batch])
        holds = holds if holds.any() else None  # none: no refusal work on each step
        results = decode_with_fallback(decoder, features, prefix, options, check, cross, holds)
        spoken = [i for i, result in enumerate(results) if not _silent(result, options, True)]
        timed = alignment.word_timings(decoder, cross, results, batch, spoken) if cross else {}
        del cross
        for i in spoken:
            chunk, result = batch[i], results[i]
            parsed, complete = segments.parse(
                result.tokens, tokenizer, chunk.start_seconds, chunk.seconds,
                avg_logprob=result.avg_logprob, no_speech_prob=result.no_speech_prob,
            )  # fmt: skip
            if i in timed:
                parsed = alignment.attach(parsed, timed[i])
            # What is still a loop after the fallback is cut to its first occurrence.
            parsed = repetition.cut_segment_loops(parsed)
            kept, again = _settle(chunk, parsed, complete)
            found.extend(kept)
            retries.extend(again)
        end = batch[-1].start_seconds + batch[-1].seconds
        last_fraction = min(1.0, end / total) if total else 0.0
        report(last_fraction)

    retries: deque[chunks.Chunk] = deque()
    pending = None  # the batch being encoded ahead, and how to wait for its features
    with encoder.Ahead(loaded.model) as ahead:
        items = _cut(iter(stream), ahead)
        while True:
            batch, encoding = [], ahead.batch()
            for chunk in _take(items, size, retries):
                batch.append(chunk)
                encoding.add(_mel(chunk, n_mels))
            if pending is not None:  # decode the previous batch while this one encodes
                check()
                features = pending[1].features()
                if not batch:
                    ahead.idle()
                with ahead.busy():
                    finish(pending[0], features)
            pending = (batch, encoding) if batch else None
            if pending is None and not retries:
                break
    report(1.0)
    found.sort(key=lambda segment: segment.start)  # tails finish after later chunks
    audio_seconds = decoded[0] / audio.SAMPLE_RATE
    return found, language or "en", probability, audio_seconds
