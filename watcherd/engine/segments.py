"""Turn one row's sampled tokens into timed segments, offset by its chunk's start."""

from __future__ import annotations

from mlx_whisper.tokenizer import Tokenizer

from watcherd.engine.decoder import TIME_PRECISION
from watcherd.engine.transcript import Segment


def parse(
    tokens: list[int],
    tokenizer: Tokenizer,
    offset: float,
    duration: float,
    **stats: float,
) -> list[Segment]:
    """Split `<|t0|> text <|t1|><|t1|> text <|t2|>` into segments.

    A row whose last segment has no closing timestamp keeps that text: its chunk ends in
    silence (VAD) or at a quiet point, so the segment simply runs to the chunk's end.
    """
    segments: list[Segment] = []
    begin = tokenizer.timestamp_begin
    start: float | None = None
    text: list[int] = []
    last_time = 0.0

    def close(end: float) -> None:
        words = tokenizer.decode(text).strip()
        if words:
            lo = min(start if start is not None else last_time, duration)
            hi = min(max(end, lo), duration)
            segments.append(Segment(offset + lo, offset + hi, words, **stats))

    for token in tokens:
        if token >= begin:
            time = (token - begin) * TIME_PRECISION
            if text:
                close(time)
                text, start = [], None
            else:
                start = time
            last_time = time
        elif token < tokenizer.eot:
            text.append(token)
    if text:
        close(duration)
    return segments
