"""Whether a media file has subtitles already, for `skip_subtitled`: a subtitle file beside
it that media servers pair with it, or a subtitle stream inside its container.

Sidecars are named as Plex, Jellyfin and Kodi read them: the source's stem, optionally
tags (`movie.en.srt`, `movie.en.forced.ass`), then a subtitle extension; the stem is
compared without case, as those servers compare it. A sidecar whose longer prefix is
another media file's stem belongs to that file (`movie.part2.srt` beside `movie.part2.mkv`
is not `movie.mkv`'s), and the files watcherd wrote itself never count: a new version of a
video is transcribed again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

SIDECAR_EXTENSIONS = {"srt", "vtt", "ass", "ssa", "sub", "idx", "sup", "smi", "sami", "ttml"}


def reason(
    source: Path, *, ours: Callable[[Path], bool], media_extensions: Iterable[str]
) -> str | None:
    """Why `source` needs no transcript ("it has subtitles: movie.en.srt"), or None."""
    sidecars = _sidecars(source, ours, media_extensions)
    if sidecars:
        return f"it has subtitles already: {', '.join(p.name for p in sidecars)}"
    streams = _subtitle_streams(source)
    if streams:
        count = f"{len(streams)} subtitle stream{'s' if len(streams) > 1 else ''}"
        return f"it has subtitles already: {count} inside ({'; '.join(streams)})"
    return None


def _sidecars(source: Path, ours: Callable[[Path], bool], media_extensions) -> list[Path]:
    try:
        siblings = sorted(source.parent.iterdir())
    except OSError:
        return []
    media = {e.lower() for e in media_extensions}
    own = source.stem.casefold()
    stems = {own} | {p.stem.casefold() for p in siblings if p.suffix[1:].lower() in media}

    def pairs_with_source(path: Path) -> bool:
        name = path.stem.casefold()  # the name without its subtitle extension
        matching = [s for s in stems if name == s or name.startswith(s + ".")]
        return max(matching, key=len, default=None) == own

    return [
        p
        for p in siblings
        if p.suffix[1:].lower() in SIDECAR_EXTENSIONS and pairs_with_source(p) and not ours(p)
    ]


def _subtitle_streams(source: Path) -> list[str]:
    """The subtitle streams PyAV sees, as "srt" or "srt, eng"; none when the file cannot
    be opened (its transcription then says why)."""
    import av

    from watcherd.engine.audio.decode import OPEN_OPTIONS

    try:
        with av.open(str(source), **OPEN_OPTIONS) as container:
            streams = list(container.streams.subtitles)
            return [
                s.codec_context.name
                + (f", {s.language}" if s.language and s.language != "und" else "")
                for s in streams
            ]
    except (OSError, av.error.FFmpegError, ValueError):
        return []
