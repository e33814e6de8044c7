"""Transcript files beside each source: txt, srt, vtt, json, md (and rttm), written
atomically.

A diarized transcript (one with `speakers`) carries its labels in every format: txt has a
paragraph per speaker turn (`Speaker 1: ...`), SRT a prefix on each cue that starts a
turn, WebVTT a voice tag (`<v Speaker 1>`) on every cue, JSON a `speaker` on each segment
and word and the `speakers` list, Markdown the speaker before each paragraph, RTTM the
turns. Without speakers each format is exactly what it was before diarization existed.

Names: `talk.m4a` gives `talk.txt`, `talk.srt`, ... When another media file shares the
stem (`talk.wav`), or a file at that name is not ours to replace, the full source name is
used instead (`talk.m4a.txt`), then numbered names. Subtitles may carry their language
(`movie.en.srt`, as media servers read it), and a format may go to a folder of its own
(Markdown into a notes vault). A reader never sees half a file: each is written to a
hidden temp file, flushed to disk and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from watcherd import __version__, faults, markdown
from watcherd.paragraphs import paragraphs
from watcherd.subtitles import Layout, cues, escape_vtt
from watcherd.transcript import Transcript

TEMP_SUFFIX = ".tmp"
SUBTITLES = ("srt", "vtt")


@dataclass(frozen=True)
class Style:
    """How the formats lay a transcript out."""

    subtitles: Layout = Layout()
    txt_layout: str = "segments"  # a line per segment, or "paragraphs"
    md_timestamps: bool = False  # each Markdown paragraph after its start time


@dataclass(frozen=True)
class Placement:
    """Where the outputs go and what their names carry, beyond the source's own name."""

    subtitle_language: str | None = None  # "en": movie.en.srt, movie.en.vtt
    folders: Mapping[str, Path] = field(default_factory=dict)  # a format's own folder


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def render_txt(t: Transcript, layout: str = "segments") -> str:
    """A line per segment; or paragraphs, a line each, with a blank line between them
    (and the speaker first, once diarized). Diarized, a segment layout is a paragraph
    per speaker turn."""
    if layout == "paragraphs":
        return "\n".join(
            f"{p.speaker + ': ' if p.speaker else ''}{p.text}\n" for p in paragraphs(t.segments)
        )
    spoken = [s for s in t.segments if s.text.strip()]
    if t.speakers:
        return "\n".join(
            f"{speaker}: {' '.join(s.text.strip() for s in turn)}\n"
            for speaker, turn in itertools.groupby(spoken, key=lambda s: s.speaker)
        )
    return "".join(f"{s.text.strip()}\n" for s in spoken)


def render_srt(t: Transcript, layout: Layout | None = None) -> str:
    def text(c) -> str:
        prefix = f"{c.speaker}: " if c.new_turn else ""
        return prefix + c.text()

    blocks = [
        f"{n}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n{text(c)}\n"
        for n, c in enumerate(cues(t.segments, layout or Layout()), start=1)
    ]
    return "\n".join(blocks)


def render_vtt(t: Transcript, layout: Layout | None = None) -> str:
    def text(c) -> str:
        voice = "" if c.speaker is None else f"<v {escape_vtt(c.speaker)}>"
        return voice + c.text(escape_vtt)

    blocks = [
        f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n{text(c)}\n"
        for c in cues(t.segments, layout or Layout())
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render_rttm(t: Transcript) -> str:
    """NIST's RTTM, the format diarization is scored in: one SPEAKER line per turn."""
    uri = "_".join(Path(t.source).stem.split()) or "audio"
    return "".join(
        f"SPEAKER {uri} 1 {turn.start:.3f} {turn.end - turn.start:.3f} <NA> <NA> "
        f"{'_'.join(t.speakers[turn.speaker].split())} <NA> <NA>\n"
        for turn in t.turns
    )


def render_json(t: Transcript) -> str:
    def speaker(item) -> dict:
        return {} if item.speaker is None else {"speaker": item.speaker}

    data = {
        "source": os.path.basename(t.source),
        "text": t.text,
        "language": t.language,
        "language_probability": t.language_probability,
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
                **speaker(s),
                **(
                    {
                        "words": [
                            {
                                "start": round(w.start, 3),
                                "end": round(w.end, 3),
                                "word": w.word,
                                "probability": round(w.probability, 4),
                                **speaker(w),
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
        **({"speakers": list(t.speakers)} if t.speakers else {}),
        "generator": f"watcherd {__version__}",
    }
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


RENDERERS: dict[str, Callable[[Transcript, Style], str]] = {
    "txt": lambda t, style: render_txt(t, style.txt_layout),
    "srt": lambda t, style: render_srt(t, style.subtitles),
    "vtt": lambda t, style: render_vtt(t, style.subtitles),
    "json": lambda t, style: render_json(t),
    "md": lambda t, style: markdown.render(t, style.md_timestamps),
    "rttm": lambda t, style: render_rttm(t),
}


def render(fmt: str, transcript: Transcript, style: Style | None = None) -> str:
    """One format's text, laid out as `style` says."""
    return RENDERERS[fmt](transcript, style or Style())


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


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _fit(base: str, suffixes: Iterable[str], name_max: int) -> str:
    """Shorten a base name so that `base<suffix>` fits the file system's name limit
    (255 bytes): a source with a 250-byte name still gets its transcripts."""
    room = name_max - max(len(suffix.encode()) for suffix in suffixes)
    encoded = base.encode()
    if len(encoded) <= room:
        return base
    return encoded[:room].decode(errors="ignore").rstrip()


def plan(
    source: Path,
    formats: Iterable[str],
    *,
    output_dir: Path | None = None,
    placement: Placement | None = None,
    media_extensions: Iterable[str] = (),
    may_replace: Callable[[Path], bool] = lambda p: True,
) -> dict[str, Path]:
    """Choose the output path of each format, never taking a name that is not ours. The
    formats that share a folder share a base name (`talk.m4a.txt` and `talk.m4a.srt`)."""
    placement = placement or Placement()
    suffixes = {
        fmt: f".{placement.subtitle_language}.{fmt}"
        if placement.subtitle_language and fmt in SUBTITLES
        else f".{fmt}"
        for fmt in formats
    }
    by_folder: dict[Path, list[str]] = {}
    for fmt in suffixes:
        folder = placement.folders.get(fmt) or output_dir or source.parent
        by_folder.setdefault(folder, []).append(fmt)
    paths: dict[str, Path] = {}
    for folder, group in by_folder.items():
        name_max = _name_max(folder)
        bases = [] if _shares_stem(source, media_extensions) else [source.stem]
        bases += [source.name] + [f"{source.name}.{n}" for n in range(1, 100)]
        for base in bases:
            base = _fit(base, [suffixes[fmt] for fmt in group], name_max)
            named = {fmt: folder / f"{base}{suffixes[fmt]}" for fmt in group}
            if all(not p.exists() or may_replace(p) for p in named.values()):
                paths |= named
                break
        else:
            raise FileExistsError(f"{source}: no free name for its transcripts in {folder}")
    return {fmt: paths[fmt] for fmt in suffixes}


def temp_path(path: Path) -> Path:
    """The one temp name an output is written under before it is renamed into place.
    Short (a long source name must not overflow the name limit), hidden (the watcher
    skips it), and the same on every attempt, so a crash leaves at most one behind and
    `discard_temps` can find it again."""
    digest = hashlib.sha1(path.name.encode(errors="surrogateescape")).hexdigest()[:12]
    return path.with_name(f".watcherd-{digest}{TEMP_SUFFIX}")


def discard_temps(paths: Iterable[Path | str]) -> None:
    """Remove temp files an interrupted write of these outputs left behind."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(temp_path(Path(path)))


def check_writable(folder: Path, *, create: bool = False) -> None:
    """Raise the OSError a write into `folder` would raise, before any work is spent;
    `create` makes the folder first when it is missing."""
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".watcherd-probe-", suffix=TEMP_SUFFIX, dir=folder)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(folder)) from None
    os.close(fd)
    os.unlink(probe)


def _write_temp(path: Path, text: str) -> Path:
    temp = temp_path(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return temp


def _fsync_folder(folder: Path) -> None:
    """Make the renames durable too (a power cut must not undo them)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write(transcript: Transcript, paths: dict[str, Path], style: Style | None = None) -> list[str]:
    """Render every format to temp files first, then rename them all into place: a failure
    (disk full, permissions) leaves no partial transcript behind."""
    temps: list[tuple[Path, Path]] = []
    try:
        for fmt, path in paths.items():
            temps.append((_write_temp(path, render(fmt, transcript, style)), path))
        for temp, path in temps:
            faults.checkpoint("outputs.rename")
            os.replace(temp, path)
    finally:
        discard_temps(path for _, path in temps)
    for folder in {path.parent for path in paths.values()}:
        _fsync_folder(folder)
    return [str(p) for p in paths.values()]
