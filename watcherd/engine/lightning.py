"""The batched loop: a file's chunks, B at a time, through the encoder and the decoder.

file ─PyAV─▶ 16 kHz blocks ─▶ VAD cut & merge (or quiet-point tiles) ─▶ chunks ≤ 30 s
     ─▶ log-mel per chunk ─▶ batches of B ─▶ encoder ─▶ batched greedy decoder
     ─▶ per-row temperature fallback ─▶ segments offset by each chunk's start

Each chunk is decoded on its own (no conditioning on the previous chunk's text), as in
WhisperX and faster-whisper's batched pipeline: that is what lets chunks run side by side,
and it also stops the repetition loops that conditioning feeds. The next batch encodes
while this one decodes (`Compute.encoding`); stretches a row skipped go back into the
stream (`quality.coverage`). Memory stays flat in the file's length.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice

import numpy as np
import psutil

from watcherd.engine.audio import chunks, decode, mel
from watcherd.engine.compute import Encoding
from watcherd.engine.decoding import alignment, language, prompt, segments
from watcherd.engine.decoding.decoder import BatchDecoder
from watcherd.engine.model.models import LoadedModel
from watcherd.engine.options import DecodeOptions
from watcherd.engine.quality import coverage, fallback, repetition
from watcherd.transcript import Segment

BLOCK_SECONDS = 60  # audio decoded per read
MAX_BATCH = 8
MEMORY_SHARE = 0.25  # of the available memory, for the batch's attention caches

Progress = Callable[[float], None]


def auto_batch_size(loaded: LoadedModel, limit: int = MAX_BATCH) -> int:
    """As many rows as a quarter of the free memory holds, at most `limit`."""
    dims = loaded.model.dims
    itemsize = 2 if loaded.dtype.size == 2 else 4
    per_row = dims.n_text_layer * 2 * (dims.n_audio_ctx + dims.n_text_ctx) * dims.n_text_state
    per_row = per_row * itemsize + dims.n_audio_ctx * dims.n_audio_state * itemsize * 4
    available = psutil.virtual_memory().available * MEMORY_SHARE
    return max(1, min(limit, int(available // per_row)))


def decoder_for(loaded: LoadedModel, language: str | None, task: str) -> BatchDecoder:
    """The model's batch decoder for a language and task, made once."""
    tokenizer = prompt.tokenizer(loaded.multilingual, loaded.num_languages, language, task)
    key = (tokenizer.language, tokenizer.task)
    if key not in loaded.decoders:
        loaded.decoders[key] = BatchDecoder(loaded.compute, tokenizer)
    return loaded.decoders[key]


def next_batch(
    items: Iterator[chunks.Chunk], size: int, retries: deque[chunks.Chunk]
) -> Iterator[chunks.Chunk]:
    """The next batch of at most `size` chunks, one by one as they are cut, tails waiting
    in `retries` first, so no tail waits long; nothing when there is nothing left for now."""
    tails = [retries.popleft() for _ in range(min(size, len(retries)))]
    yield from tails
    yield from islice(items, size - len(tails))


def _cut(stream: Iterator[chunks.Chunk], encoding: Encoding) -> Iterator[chunks.Chunk]:
    """The stream's chunks, the encoder told that the caller is busy while each is cut."""
    while True:
        with encoding.busy():
            chunk = next(stream, None)
        if chunk is None:
            return
        yield chunk


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
    total = decode.probe_seconds(path) or 0.0
    decoded = [0]

    def blocks() -> Iterator[np.ndarray]:
        for block in decode.stream_audio(path, BLOCK_SECONDS * decode.SAMPLE_RATE):
            decoded[0] += block.size
            yield block

    stream = chunks.speech_chunks(blocks()) if vad else chunks.tiles(blocks())
    stream = (chunk for chunk in stream if coverage.audible(chunk.samples))
    compute = loaded.compute
    detected = options.language if loaded.multilingual else "en"
    probability: float | None = None
    size = batch_size or auto_batch_size(loaded)
    n_mels = loaded.model.dims.n_mels
    found: list[Segment] = []
    last_fraction = 0.0

    def check() -> None:
        report(last_fraction)

    def finish(batch: list[chunks.Chunk], features) -> None:
        """Decode an encoded batch; keep its segments, queue the stretches it skipped."""
        nonlocal detected, probability, last_fraction
        if detected is None:
            detected, probability = language.detect(compute, features, [c.seconds for c in batch])
        decoder = decoder_for(loaded, detected, options.task)
        prefix = prompt.prefix(decoder.tokenizer, options.initial_prompt,
                               loaded.model.dims.n_text_ctx)  # fmt: skip
        # Word timestamps reuse the decoder's cross-attention keys/values: kept only then.
        cross = decoder.cross_kv(features) if options.word_timestamps else None
        holds = np.array([coverage.hold(chunk) for chunk in batch])
        holds = holds if holds.any() else None  # none: no refusal work on each step
        results = fallback.decode_with_fallback(decoder, features, prefix, options, check,
                                                cross, holds)  # fmt: skip
        spoken = [i for i, r in enumerate(results) if not fallback.silent(r, options, True)]
        timed = alignment.word_timings(decoder, cross, results, batch, spoken) if cross else {}
        del cross
        for i in spoken:
            chunk, result = batch[i], results[i]
            parsed, complete = segments.parse(
                result.tokens, decoder.tokenizer, chunk.start_seconds, chunk.seconds,
                avg_logprob=result.avg_logprob, no_speech_prob=result.no_speech_prob,
            )  # fmt: skip
            if i in timed:
                parsed = alignment.attach(parsed, timed[i])
            # What is still a loop after the fallback is cut to its first occurrence.
            parsed = repetition.cut_segment_loops(parsed)
            kept, again = coverage.settle(chunk, parsed, complete)
            found.extend(kept)
            retries.extend(again)
        end = batch[-1].start_seconds + batch[-1].seconds
        last_fraction = min(1.0, end / total) if total else 0.0
        report(last_fraction)

    retries: deque[chunks.Chunk] = deque()
    pending = None  # the batch being encoded ahead, and how to wait for its features
    encoding = compute.encoding()
    try:
        items = _cut(iter(stream), encoding)
        while True:
            batch, encoded = [], encoding.batch()
            for chunk in next_batch(items, size, retries):
                batch.append(chunk)
                encoded.add(mel.window(chunk, n_mels))
            if pending is not None:  # decode the previous batch while this one encodes
                check()
                features = pending[1].features()
                if not batch:
                    encoding.idle()
                with encoding.busy():
                    finish(pending[0], features)
            pending = (batch, encoded) if batch else None
            if pending is None and not retries:
                break
    finally:
        encoding.close()
    report(1.0)
    found.sort(key=lambda segment: segment.start)  # tails finish after later chunks
    audio_seconds = decoded[0] / decode.SAMPLE_RATE
    return found, detected or "en", probability, audio_seconds
