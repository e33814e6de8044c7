"""Turn one row's sampled tokens into timed segments, offset by its chunk's start."""

from __future__ import annotations

from mlx_whisper.tokenizer import Tokenizer

from watcherd.engine.decoding.rules import TIME_PRECISION
from watcherd.transcript import Segment


def parse(
    tokens: list[int],
    tokenizer: Tokenizer,
    offset: float,
    duration: float,
    **stats: float,
) -> tuple[list[Segment], float]:
    """Split `<|t0|> text <|t1|><|t1|> text <|t2|>` into segments.

    Returns the segments and the time (relative to the chunk) up to which they are
    complete: the last closing timestamp. A trailing segment with no closing timestamp
    runs to the chunk's end; the caller may drop it and decode that tail again.
    """
    segments: list[Segment] = []
    begin = tokenizer.timestamp_begin
    start: float | None = None
    text: list[int] = []
    last_time = 0.0
    complete = 0.0

    def close(end: float) -> None:
        words = tokenizer.decode(text).strip()
        lo = min(start if start is not None else last_time, duration)
        hi = min(max(end, lo), duration)
        if words and hi > lo:  # an instantaneous segment is a hallucination, as in Whisper
            segments.append(Segment(offset + lo, offset + hi, words, **stats))

    for token in tokens:
        if token >= begin:
            time = (token - begin) * TIME_PRECISION
            if text:
                close(time)
                text, start = [], None
                complete = min(time, duration)
            else:
                start = time
            last_time = time
        elif token < tokenizer.eot:
            text.append(token)
    if text:
        close(duration)
    return segments, complete
