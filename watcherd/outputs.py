"""Transcript files beside each source: txt, srt, vtt and json, written atomically.

Names: `talk.m4a` gives `talk.txt`, `talk.srt`, ... When another media file shares the
stem (`talk.wav`), or a file at that name is not ours to replace, the full source name is
used instead (`talk.m4a.txt`), then numbered names. A reader never sees half a file: each
is written to a hidden temp file, flushed to disk and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from watcherd import __version__
from watcherd.engine.transcript import Transcript

TEMP_SUFFIX = ".tmp"


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def render_txt(t: Transcript) -> str:
    return "".join(f"{s.text.strip()}\n" for s in t.segments if s.text.strip())


def render_srt(t: Transcript) -> str:
    cues = [
        f"{n}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
        for n, s in enumerate((s for s in t.segments if s.text.strip()), start=1)
    ]
    return "\n".join(cues)


def render_vtt(t: Transcript) -> str:
    cues = [
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n"
        for s in t.segments
        if s.text.strip()
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def render_json(t: Transcript) -> str:
    data = {
        "source": os.path.basename(t.source),
        "text": t.text,
        "language": t.language,
        "task": t.task,
        "model": t.model,
        "backend": t.backend,
        "audio_seconds": t.audio_seconds,
        "processing_seconds": t.processing_seconds,
        "segments": [
            {
                "id": i,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text.strip(),
                **(
                    {
                        "words": [
                            {
                                "start": round(w.start, 3),
                                "end": round(w.end, 3),
                                "word": w.word,
                                "probability": round(w.probability, 4),
                            }
                            for w in s.words
                        ]
                    }
                    if s.words
                    else {}
                ),
            }
            for i, s in enumerate(t.segments)
        ],
        "generator": f"watcherd {__version__}",
    }
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


RENDERERS: dict[str, Callable[[Transcript], str]] = {
    "txt": render_txt,
    "srt": render_srt,
    "vtt": render_vtt,
    "json": render_json,
}


def _shares_stem(source: Path, media_extensions: Iterable[str]) -> bool:
    extensions = {e.lower() for e in media_extensions}
    try:
        siblings = list(source.parent.iterdir())
    except OSError:
        return False
    return any(
        p.name != source.name and p.stem == source.stem and p.suffix[1:].lower() in extensions
        for p in siblings
    )


def plan(
    source: Path,
    formats: Iterable[str],
    *,
    output_dir: Path | None = None,
    media_extensions: Iterable[str] = (),
    may_replace: Callable[[Path], bool] = lambda p: True,
) -> dict[str, Path]:
    """Choose the output path of each format, never taking a name that is not ours."""
    folder = output_dir or source.parent
    bases = [] if _shares_stem(source, media_extensions) else [source.stem]
    bases += [source.name] + [f"{source.name}.{n}" for n in range(1, 100)]
    for base in bases:
        paths = {fmt: folder / f"{base}.{fmt}" for fmt in formats}
        if all(not p.exists() or may_replace(p) for p in paths.values()):
            return paths
    raise FileExistsError(f"{source}: no free name for its transcripts in {folder}")


def _write_atomic_temp(path: Path, text: str) -> Path:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return Path(temp)


def write(transcript: Transcript, paths: dict[str, Path]) -> list[str]:
    """Render every format to temp files first, then rename them all into place: a failure
    (disk full, permissions) leaves no partial transcript behind."""
    temps: list[tuple[Path, Path]] = []
    try:
        for fmt, path in paths.items():
            temps.append((_write_atomic_temp(path, RENDERERS[fmt](transcript)), path))
        for temp, path in temps:
            os.replace(temp, path)
    finally:
        for temp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
    return [str(p) for p in paths.values()]
