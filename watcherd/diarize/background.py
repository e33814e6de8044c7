"""Diarizing a job's file beside its transcription, and labelling the transcript after.

    speakers = Speakers(cache_dir)                       # once per process
    with speakers.beside(path, profile) as pending:     # None unless profile.diarize
        transcript = engine.transcribe(path, ...)        # meanwhile, on another thread
        if pending:
            transcript = pending.label(transcript)       # joins, then attributes

The diarizer decodes the file itself (the decoder's stream, a block at a time) on its own
thread with one ONNX Runtime thread, so it shares no lock with the engine and a file from
an inbox without `diarize` starts nothing. Reference voices (`speaker_names`) are embedded
once per clip and kept.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from watcherd.diarize import Diarization, Diarizer, SpeakerHint, load
from watcherd.diarize.attribution import attribute, name_speakers

if TYPE_CHECKING:
    from watcherd.config import Profile
    from watcherd.transcript import Transcript


class Cancelled(Exception):
    """The job stopped; its diarization ends at the next block."""


def hint_for(profile: Profile) -> SpeakerHint:
    return SpeakerHint(profile.speakers, profile.min_speakers, profile.max_speakers)


class Speakers:
    """The diarizer (loaded on first use) and the reference voices, for every job."""

    def __init__(self, cache_dir: Path, *, threads: int = 1):
        self.cache_dir = Path(cache_dir)
        self.threads = threads
        self._diarizer: Diarizer | None = None
        self._voices: dict[Path, np.ndarray | None] = {}
        self._lock = threading.Lock()  # loading only; never held while the engine decodes

    def diarizer(self) -> Diarizer:
        with self._lock:
            if self._diarizer is None:
                self._diarizer = load(self.cache_dir, threads=self.threads)
            return self._diarizer

    def voice(self, clip: Path) -> np.ndarray | None:
        """The voice of whoever talks most in a reference clip, as the diarizer sees
        voices (so silence or another voice in the clip does not blur it); None when
        the clip holds no speech."""
        from watcherd.engine.audio.decode import stream_audio

        with self._lock:
            if clip in self._voices:
                return self._voices[clip]
        result = self.diarizer().diarize(stream_audio(clip))
        known = None
        if result.turns and result.voices is not None:
            talk = np.zeros(result.speakers)
            for turn in result.turns:
                talk[turn.speaker] += turn.end - turn.start
            known = result.voices[int(talk.argmax())]
        with self._lock:
            self._voices[clip] = known
        return known

    def start(self, path: Path | str, profile: Profile) -> Pending | None:
        """Start diarizing the file now, when its profile asks for it."""
        return Pending(self, Path(path), profile) if profile.diarize else None

    def beside(self, path: Path | str, profile: Profile) -> Pending | contextlib.nullcontext:
        """`start`, as a context whose value is the Pending diarization (or None), and whose
        early exit stops it."""
        return self.start(path, profile) or contextlib.nullcontext()


class Pending:
    """One file's diarization, running on its own thread from construction."""

    def __init__(self, speakers: Speakers, path: Path, profile: Profile):
        self.speakers = speakers
        self.path = path
        self.profile = profile
        self._cancel = threading.Event()
        self._result: Diarization | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="watcherd-diarize", daemon=True)
        self._thread.start()

    def _blocks(self) -> Iterator[np.ndarray]:
        from watcherd.engine.audio.decode import stream_audio

        for block in stream_audio(self.path):
            if self._cancel.is_set():
                raise Cancelled
            yield block

    def _run(self) -> None:
        try:
            diarizer = self.speakers.diarizer()
            self._result = diarizer.diarize(self._blocks(), hint_for(self.profile))
        except BaseException as exc:  # handed to label(), on the worker's thread
            self._error = exc

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def done(self) -> bool:
        """Whether `label` can return at once."""
        return not self._thread.is_alive()

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for it to be done; whether it is."""
        self._thread.join(timeout)
        return self.done

    def __enter__(self) -> Pending:
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()  # after label(), nothing is left to stop

    def result(self) -> Diarization:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def label(self, transcript: Transcript) -> Transcript:
        """The transcript with speakers, once the diarization is done."""
        result = self.result()
        names: dict[int, str] = {}
        if self.profile.speaker_names and result.voices is not None:
            voices = {name: self.speakers.voice(clip) for name, clip in self.profile.speaker_names}
            references = {name: v for name, v in voices.items() if v is not None}
            names = name_speakers(result.voices, references)
        return attribute(transcript, result.turns, names)
