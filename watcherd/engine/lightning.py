"""The batched loop: files' chunks, B at a time, through the encoder and the decoder.

file ─PyAV─▶ 16 kHz blocks ─▶ VAD cut & merge (or quiet-point tiles) ─▶ chunks ≤ 30 s
     ─▶ log-mel per chunk ─▶ batches of B ─▶ encoder ─▶ batched greedy decoder
     ─▶ per-row temperature fallback ─▶ segments offset by each chunk's start

Each chunk is decoded on its own (no conditioning on the previous chunk's text), as in
WhisperX and faster-whisper's batched pipeline: that is what lets chunks run side by side,
and it also stops the repetition loops that conditioning feeds. The next batch encodes
while this one decodes (`Compute.encoding`); stretches a row skipped go back into the
stream (`quality.coverage`). Memory stays flat in the file's length.

Several files can share one stream (`stream`): a queue of short files is then one stream
of windows, batched across files, the next file's chunks cut and encoded while the last
batch of the one before decodes. Each file keeps its own language, progress and result,
and is handed back as soon as its last chunk is decoded.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import psutil

from watcherd import faults
from watcherd.engine.audio import child, chunks, decode, mel
from watcherd.engine.audio.ahead import ahead
from watcherd.engine.audio.chunks import Chunk
from watcherd.engine.compute import Encoding
from watcherd.engine.decoding import alignment, language, prompt, segments
from watcherd.engine.decoding.decoder import BatchDecoder
from watcherd.engine.model.models import LoadedModel
from watcherd.engine.options import DecodeOptions
from watcherd.engine.quality import coverage, fallback, repetition
from watcherd.transcript import Segment

BLOCK_SECONDS = 60  # audio decoded per read
MEMORY_SHARE = 0.25  # of the memory available, for the batch's attention caches
AHEAD_CHUNKS = 64  # chunks cut ahead of the decoder, where there are cores to spare
CHILD_DECODE_SECONDS = 300  # files this long decode in a child process (`audio/child.py`)

Progress = Callable[[float], None]


class Cancelled(Exception):
    """Raised by a file's progress callback: drop this file, go on with the others."""


@dataclass(frozen=True)
class Checkpoint:
    """How far a file's transcription is settled: every chunk that starts before `until`
    (a sample offset) is decoded, its second passes too, and `segments` are what they
    gave. A file resumed from a checkpoint cuts the same chunks (its audio is read and
    its VAD run from the start again), skips those, and reads as if never interrupted."""

    until: int
    segments: tuple[Segment, ...] = ()
    language: str | None = None  # as detected from the file's first batch
    probability: float | None = None
    windows: int = 0  # decoded in this stream so far (what a crash after it would redo)


@dataclass(frozen=True)
class Request:
    """A file to transcribe. `progress(fraction)` is called as its chunks are decoded; it
    may raise `Cancelled` to drop the file, or anything else to abandon the whole stream.
    `save(checkpoint)` is called each time more of the file is settled, with the segments
    settled since the last call; `resume` goes on from a checkpoint saved before."""

    path: Path | str
    options: DecodeOptions = DecodeOptions()
    progress: Progress | None = None
    tag: object = None  # the caller's own, handed back with the result
    save: Callable[[Checkpoint], None] | None = None
    resume: Checkpoint | None = None


@dataclass
class Result:
    """A file's transcription, or the error that ended it (`error`, then no segments)."""

    request: Request
    segments: list[Segment] = field(default_factory=list)
    language: str = "en"
    probability: float | None = None  # of the language, when it was detected
    audio_seconds: float = 0.0
    processing_seconds: float = 0.0  # from the file's first chunk to its result
    windows: int = 0  # decoded in this stream (a resumed file skips what was settled)
    error: Exception | None = None
    cancelled: bool = False


@dataclass
class _Cut:
    """A chunk as cut, and how many of its windows (itself, its second passes) are still
    to decode."""

    start: int  # a sample offset
    index: int  # its place among the file's chunks
    outstanding: int = 1


@dataclass
class _File:
    """A file in the stream, and what is known of it so far."""

    request: Request
    total: float  # the declared length, for progress
    language: str | None
    result: Result
    samples: int = 0  # decoded so far
    outstanding: int = 0  # chunks cut and not yet settled, second passes included
    cut: bool = False  # every chunk is cut
    fraction: float = 0.0
    dead: bool = False  # failed or cancelled: its chunks are dropped
    started: float = field(default_factory=time.perf_counter)
    # The chunks cut and not settled, in order; what precedes the first is settled.
    unsettled: deque[_Cut] = field(default_factory=deque)
    cuts: int = 0  # chunks cut (those skipped on resuming too)
    cut_until: int = 0  # the end of the last chunk cut (a sample offset)
    saved: int = 0  # the checkpoint saved last (a sample offset)
    decoded: int = 0  # windows decoded

    def settled_until(self) -> int:
        """The start of the first chunk not settled, else the end of the last one cut:
        the next chunk will start after it."""
        while self.unsettled and self.unsettled[0].outstanding == 0:
            self.unsettled.popleft()
        return self.unsettled[0].start if self.unsettled else self.cut_until

    @property
    def finished(self) -> bool:
        return self.dead or (self.cut and not self.outstanding)

    def report(self) -> None:
        if self.request.progress is not None and not self.dead:
            self.request.progress(self.fraction)


@dataclass(frozen=True)
class _Window:
    file: _File
    chunk: Chunk
    origin: _Cut  # the chunk as cut: its own, or its parent's for a second pass

    @property
    def seed(self) -> int:
        """Sampling that depends on the chunk, not on its row in a batch."""
        return 2 * self.chunk.start + self.chunk.second_pass


def auto_batch_size(loaded: LoadedModel) -> int:
    """As many rows as a share of the memory holds, at most the compute path's limit."""
    dims = loaded.model.dims
    itemsize = 2 if loaded.dtype.size == 2 else 4
    per_row = dims.n_text_layer * 2 * (dims.n_audio_ctx + dims.n_text_ctx) * dims.n_text_state
    per_row = per_row * itemsize + dims.n_audio_ctx * dims.n_audio_state * itemsize * 4
    compute = loaded.compute
    available = (compute.memory_bytes() or psutil.virtual_memory().available) * MEMORY_SHARE
    return max(1, min(compute.max_batch, int(available // per_row)))


def decoder_for(loaded: LoadedModel, language: str | None, task: str) -> BatchDecoder:
    """The model's batch decoder for a language and task, made once."""
    tokenizer = prompt.tokenizer(loaded.multilingual, loaded.num_languages, language, task)
    key = (tokenizer.language, tokenizer.task)
    if key not in loaded.decoders:
        loaded.decoders[key] = BatchDecoder(loaded.compute, tokenizer)
    return loaded.decoders[key]


def next_batch(items: Iterator[_Window], size: int, retries: deque) -> Iterator[_Window]:
    """The next batch of at most `size` windows, one by one as they are cut, second passes
    waiting in `retries` first, so none waits long; nothing when nothing is left for now."""
    tails = [retries.popleft() for _ in range(min(size, len(retries)))]
    yield from tails
    yield from islice(items, size - len(tails))


class _Stream:
    """The state of one stream: its files, the second passes waiting, the results ready."""

    def __init__(self, loaded: LoadedModel, vad: bool):
        self.loaded = loaded
        self.vad = vad
        self.retries: deque[_Window] = deque()
        self.ready: deque[Result] = deque()
        self.files: list[_File] = []  # not yet handed back

    # --- cutting ---------------------------------------------------------------------

    def windows(self, requests: Iterator[Request], encoding: Encoding) -> Iterator[_Window]:
        """Every file's audible chunks in turn. The next file is asked for only when the
        one before is cut: a worker claims its next job only when the stream needs it."""
        for request in requests:
            file = self._open(request)
            if file is None:
                continue
            resume = file.request.resume
            try:
                for chunk in self._chunks(file, encoding):
                    if file.dead:
                        break
                    file.cuts += 1
                    if resume is not None and chunk.start < resume.until:
                        continue  # settled before the interruption
                    file.outstanding += 1
                    origin = _Cut(chunk.start, file.cuts - 1)
                    file.unsettled.append(origin)
                    file.cut_until = chunk.start + chunk.samples.size
                    yield _Window(file, chunk, origin)
            except decode.AudioError as exc:
                self._fail(file, exc)
            file.cut = True
            self._settle(file)

    def _open(self, request: Request) -> _File | None:
        started = time.perf_counter()
        options = request.options
        multilingual = self.loaded.multilingual
        result = Result(request, language=options.language if multilingual else "en")
        try:
            total = decode.probe_seconds(request.path) or 0.0
        except decode.AudioError as exc:
            result.error = exc
            self.ready.append(result)
            return None
        language = options.language if multilingual else "en"
        file = _File(request, total, language, result, started=started)
        if request.resume is not None:
            file.saved = request.resume.until
            result.segments.extend(request.resume.segments)
            if language is None:
                file.language = request.resume.language
                result.probability = request.resume.probability
        self.files.append(file)
        return file

    def _chunks(self, file: _File, encoding: Encoding) -> Iterator[Chunk]:
        workers = self.loaded.compute.spare_cores

        def blocks() -> Iterator[np.ndarray]:
            elsewhere = workers >= 2 and file.total >= CHILD_DECODE_SECONDS
            source = child.stream_audio if elsewhere else decode.stream_audio
            for block in source(file.request.path, BLOCK_SECONDS * decode.SAMPLE_RATE):
                file.samples += block.size
                yield block

        if self.vad:
            cut = chunks.speech_chunks(blocks(), workers=max(0, workers - 1))
        else:
            cut = chunks.tiles(blocks())
        if workers:  # cut ahead in a thread, the VAD's segments in the others
            cut = ahead(cut, AHEAD_CHUNKS)
        while True:  # the encoder leaves a core to the caller while it cuts
            with encoding.busy():
                chunk = next(cut, None)
            if chunk is None:
                return
            if coverage.audible(chunk.samples):  # nothing to decode in digital silence
                yield chunk

    # --- decoding --------------------------------------------------------------------

    def check(self) -> None:
        """Every file being decoded hears of its progress; one may be cancelled."""
        for file in self.files:
            try:
                file.report()
            except Cancelled:
                file.dead = file.result.cancelled = True
                self._settle(file)

    def finish(self, batch: list[_Window], features) -> None:
        """Decode an encoded batch; keep its segments, queue the stretches it skipped."""
        for window in batch:  # the fault tests' poison: a file that crashes at one chunk
            faults.checkpoint(
                "decode", f"{Path(window.file.request.path).name}#{window.origin.index}"
            )
        self._detect(batch, features)
        groups: dict[str | None, list[int]] = {}
        for i, window in enumerate(batch):
            if not window.file.dead:
                groups.setdefault(window.file.language, []).append(i)
        compute = self.loaded.compute
        for lang, rows in groups.items():
            subset = features if len(rows) == len(batch) else features[compute.xp.array(rows)]
            self._decode([batch[i] for i in rows], subset, lang)
        for window in batch:
            window.file.outstanding -= 1
            window.origin.outstanding -= 1
            window.file.decoded += 1
            chunk = window.chunk
            window.file.fraction = max(window.file.fraction, self._fraction(window.file, chunk))
        for file in {id(w.file): w.file for w in batch}.values():
            self._checkpoint(file)
            self._settle(file)
            if not file.dead:
                file.report()

    def _detect(self, batch: list[_Window], features) -> None:
        """The language of each file that has none yet, from its rows in this batch."""
        compute = self.loaded.compute
        for file in {id(w.file): w.file for w in batch}.values():
            if file.language is not None or file.dead:
                continue
            rows = [i for i, w in enumerate(batch) if w.file is file]
            own = features[compute.xp.array(rows)]
            weights = [batch[i].chunk.seconds for i in rows]
            file.language, file.result.probability = language.detect(compute, own, weights)

    def _decode(self, batch: list[_Window], features, lang: str) -> None:
        loaded = self.loaded
        options = batch[0].file.request.options  # one stream, one set of options
        decoder = decoder_for(loaded, lang, options.task)
        prefix = prompt.prefix(decoder.tokenizer, options.initial_prompt,
                               loaded.model.dims.n_text_ctx)  # fmt: skip
        # Word timestamps reuse the decoder's cross-attention keys/values: kept only then.
        cross = decoder.cross_kv(features) if options.word_timestamps else None
        holds = np.array([coverage.hold(w.chunk) for w in batch])
        holds = holds if holds.any() else None  # none: no refusal work on each step
        results = fallback.decode_with_fallback(decoder, features, prefix, options, self.check,
                                                cross, holds, [w.seed for w in batch])  # fmt: skip
        spoken = [i for i, r in enumerate(results) if not fallback.silent(r, options, True)]
        chunked = [w.chunk for w in batch]
        timed = alignment.word_timings(decoder, cross, results, chunked, spoken) if cross else {}
        del cross
        for i in spoken:
            window, result = batch[i], results[i]
            if window.file.dead:
                continue
            chunk = window.chunk
            parsed, complete = segments.parse(
                result.tokens, decoder.tokenizer, chunk.start_seconds, chunk.seconds,
                avg_logprob=result.avg_logprob, no_speech_prob=result.no_speech_prob,
            )  # fmt: skip
            if i in timed:
                parsed = alignment.attach(parsed, timed[i])
            # What is still a loop after the fallback is cut to its first occurrence.
            parsed = repetition.cut_segment_loops(parsed)
            kept, again = coverage.settle(chunk, parsed, complete)
            window.file.result.segments.extend(kept)
            window.file.outstanding += len(again)
            window.origin.outstanding += len(again)
            self.retries.extend(_Window(window.file, stretch, window.origin) for stretch in again)

    @staticmethod
    def _fraction(file: _File, chunk: Chunk) -> float:
        end = chunk.start_seconds + chunk.seconds
        return min(1.0, end / file.total) if file.total else 0.0

    def _checkpoint(self, file: _File) -> None:
        """Save how far the file is settled, when that moved, while more is to come."""
        until = file.settled_until()
        if file.request.save is None or file.dead or until <= file.saved:
            return
        start, end = file.saved / decode.SAMPLE_RATE, until / decode.SAMPLE_RATE
        settled = sorted((s for s in file.result.segments if start <= s.start < end),
                         key=lambda s: s.start)  # fmt: skip
        file.request.save(Checkpoint(until, tuple(settled), file.language,
                                     file.result.probability, file.decoded))  # fmt: skip
        file.saved = until

    # --- handing results back ----------------------------------------------------------

    def _fail(self, file: _File, error: Exception) -> None:
        file.dead, file.result.error = True, error
        self._settle(file)

    def _settle(self, file: _File) -> None:
        """Hand a file back once it is finished (decoded, failed or cancelled)."""
        if not file.finished or file not in self.files:
            return
        self.files.remove(file)
        file.result.processing_seconds = time.perf_counter() - file.started
        file.result.windows = file.decoded
        if file.dead:
            self.retries = deque(w for w in self.retries if w.file is not file)
            file.result.segments = []
        else:
            file.result.segments.sort(key=lambda s: s.start)  # tails finish after the rest
            file.result.language = file.language or "en"
            file.result.audio_seconds = file.samples / decode.SAMPLE_RATE
            file.fraction = 1.0
            file.report()
        self.ready.append(file.result)


def stream(
    loaded: LoadedModel,
    requests: Iterable[Request],
    *,
    vad: bool = True,
    batch_size: int | None = None,
) -> Iterator[Result]:
    """Transcribe files as one stream of windows; each file's `Result` as soon as it is
    done. Every request must share the same decode options."""
    state = _Stream(loaded, vad)
    size = batch_size or auto_batch_size(loaded)
    n_mels = loaded.model.dims.n_mels
    encoding = loaded.compute.encoding()
    pending = None  # the batch being encoded ahead, and how to wait for its features
    try:
        windows = state.windows(iter(requests), encoding)
        while True:
            batch, encoded = [], encoding.batch()
            for window in next_batch(windows, size, state.retries):
                batch.append(window)
                encoded.add(mel.window(window.chunk, n_mels))
            if pending is not None:  # decode the previous batch while this one encodes
                state.check()
                features = pending[1].features()
                if not batch:
                    encoding.idle()
                with encoding.busy():
                    state.finish(pending[0], features)
            while state.ready:
                yield state.ready.popleft()
            pending = (batch, encoded) if batch else None
            if pending is None and not state.retries:
                break
    finally:
        encoding.close()
    yield from state.ready


def transcribe(
    loaded: LoadedModel,
    path,
    options: DecodeOptions,
    progress: Progress | None = None,
    *,
    vad: bool = True,
    batch_size: int | None = None,
) -> Result:
    """Transcribe one file; raises its AudioError."""
    (result,) = stream(loaded, [Request(path, options, progress)], vad=vad, batch_size=batch_size)
    if result.error is not None:
        raise result.error
    return result
