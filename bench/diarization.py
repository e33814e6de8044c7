"""Diarization figures: `python -m bench.diarization [--hour] [--step S] [--threads N]`.

- DER (pyannote.metrics, collar 0.25 s, overlap scored, each file's UEM where it has one)
  and whether the speaker count is right with no hint, on the real recordings of
  ../shared/audio-dev/diarization/ (RTTM references) and on the conversations of
  `bench.conversations`; also DER when the true count is given as a hint.
- Speaker-attributed WER on the English conversations: tiny.en with word timestamps, labelled by
  the diarizer, scored as cpWER (each reference speaker's words against the words of the
  hypothesis speaker it is matched to, the matching that minimises the errors; Whisper's
  English normaliser), beside the plain WER of the same transcripts.
- x realtime of diarization alone (one file after another, decoding excluded), and of the
  whole job (`watcherd transcribe`'s path: decode + transcribe, with and without the
  diarizer beside it) on the conversations.
- `--hour`: the whole job with diarization on a 1-hour recording (the conversations and
  real recordings repeated), in a fresh process, for its peak RSS.

Prints Markdown tables; the JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import platformdirs

from bench.conversations import SHARED, all_conversations
from bench.data import DATA, _write_wav
from watcherd.diarize import SpeakerHint, load
from watcherd.diarize.pipeline import Tuning
from watcherd.engine.audio.decode import SAMPLE_RATE, load_audio

REAL = SHARED / "audio-dev" / "diarization"
RESULTS = Path(__file__).resolve().parent / "results"
COLLAR = 0.25
MODELS = Path(platformdirs.user_cache_dir("watcherd", appauthor=False)) / "models"


def annotation(rows):
    from pyannote.core import Annotation, Segment

    out = Annotation()
    for start, end, label in rows:
        out[Segment(start, end)] = str(label)
    return out


def read_rttm(path: Path):
    rows = []
    for line in path.read_text().splitlines():
        f = line.split()
        rows.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    return annotation(rows)


def uem(audio: Path, seconds: float):
    from pyannote.core import Segment, Timeline

    path = audio.with_name(audio.name + ".uem")
    if path.exists():
        f = path.read_text().split()
        return Timeline([Segment(float(f[2]), float(f[3]))])
    return Timeline([Segment(0, seconds)])


def files() -> list[tuple[str, str, Path, Path]]:
    """(set, name, audio, reference RTTM)"""
    real = [("real", p.name.removesuffix(".opus.rttm"), p.with_suffix(""), p)
            for p in sorted(REAL.glob("*.rttm"))]  # fmt: skip
    made = [("conversations", c.name, c.wav, c.rttm) for c in all_conversations()]
    return real + made


def diarize_all(diarizer, items) -> list[dict]:
    from pyannote.metrics.diarization import DiarizationErrorRate

    rows = []
    for group, name, audio, rttm in items:
        samples = load_audio(audio)
        seconds = len(samples) / SAMPLE_RATE
        reference = read_rttm(rttm)
        truth = len(reference.labels())
        started = time.perf_counter()
        result = diarizer.diarize(samples)
        elapsed = time.perf_counter() - started
        hinted = diarizer.diarize(samples, SpeakerHint(exactly=truth))
        row = {"set": group, "file": name, "seconds": round(seconds, 2), "speakers": truth,
               "found": result.speakers, "diarize_seconds": round(elapsed, 3)}  # fmt: skip
        for key, turns in (("der", result.turns), ("der_hinted", hinted.turns)):
            metric = DiarizationErrorRate(collar=COLLAR, skip_overlap=False)
            hypothesis = annotation((t.start, t.end, t.speaker) for t in turns)
            detail = metric(reference, hypothesis, uem=uem(audio, seconds), detailed=True)
            row[key] = detail
        rows.append(row)
    return rows


def pooled_der(rows, key: str) -> float:
    parts = ("missed detection", "false alarm", "confusion")
    errors = sum(r[key][p] for r in rows for p in parts)
    return 100 * errors / sum(r[key]["total"] for r in rows)


def cpwer(reference: dict[str, str], hypothesis: dict[str, str]) -> tuple[int, int]:
    """(errors, reference words) of the best one-to-one matching of speakers."""
    import jiwer
    from scipy.optimize import linear_sum_assignment

    refs, hyps = list(reference), list(hypothesis) + [None] * len(reference)

    def errors(r: str, h: str | None) -> int:
        words = reference[r].split()
        if h is None or not hypothesis[h].split():
            return len(words)
        out = jiwer.process_words(reference[r], hypothesis[h])
        return out.substitutions + out.deletions + out.insertions

    cost = np.array([[errors(r, h) for h in hyps] for r in refs])
    rows, cols = linear_sum_assignment(cost)
    matched = {hyps[c] for c in cols}
    unmatched = sum(len(hypothesis[h].split()) for h in hypothesis if h not in matched)
    return int(cost[rows, cols].sum()) + unmatched, sum(len(reference[r].split()) for r in refs)


def jobs(conversations, threads: int, tuning: Tuning) -> dict:
    """The whole job on each conversation, without and with diarization; SA-WER."""
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    from watcherd.config import Settings
    from watcherd.diarize.background import Speakers
    from watcherd.engine import DecodeOptions, Engine

    normalise = EnglishTextNormalizer()
    engine = Engine("tiny.en", MODELS)
    engine.load()
    speakers = Speakers(MODELS, threads=threads)
    speakers.diarizer().tuning = tuning
    profile = Settings(model="tiny.en", language="en", diarize=True).profile()
    options = DecodeOptions(language="en", word_timestamps=True)
    engine.transcribe(conversations[0].wav, options)  # warm up both
    speakers.beside(conversations[0].wav, profile).result()
    plain = with_speakers = audio = 0.0
    errors = words = 0
    wer_refs, wer_hyps = [], []
    for c in conversations:
        started = time.perf_counter()
        engine.transcribe(c.wav, options)
        plain += time.perf_counter() - started
        started = time.perf_counter()
        with speakers.beside(c.wav, profile) as pending:
            transcript = pending.label(engine.transcribe(c.wav, options))
        with_speakers += time.perf_counter() - started
        audio += transcript.audio_seconds
        reference: dict[str, str] = {}
        for turn in c.turns:
            reference[turn["speaker"]] = reference.get(turn["speaker"], "") + " " + turn["text"]
        hypothesis: dict[str, str] = {}
        for s in transcript.segments:
            hypothesis[s.speaker] = hypothesis.get(s.speaker, "") + " " + s.text
        reference = {k: normalise(v) for k, v in reference.items()}
        hypothesis = {k: normalise(v) for k, v in hypothesis.items()}
        e, n = cpwer(reference, hypothesis)
        errors, words = errors + e, words + n
        wer_refs.append(normalise(" ".join(t["text"] for t in c.turns)))
        wer_hyps.append(normalise(transcript.text))
    return {
        "audio_seconds": round(audio, 1),
        "xrt_without": round(audio / plain, 1),
        "xrt_with": round(audio / with_speakers, 1),
        "sa_wer": round(100 * errors / words, 2),
        "wer": round(100 * jiwer.wer(wer_refs, wer_hyps), 2),
    }


def hour(args) -> dict:
    """The whole job with diarization on one hour, in a fresh process (peak RSS)."""
    path = DATA / "diarization-hour.wav"
    if not path.exists():
        parts, total = [], 0.0
        sources = [c.wav for c in all_conversations()] + sorted(REAL.glob("*.opus"))
        while total < 3600:
            for source in sources:
                samples = load_audio(source)
                parts += [samples, np.zeros(SAMPLE_RATE, np.float32)]
                total += len(samples) / SAMPLE_RATE + 1
        _write_wav(path, parts)
    command = [sys.executable, "-m", "bench.diarization", "--hour-job", str(path)]
    command += ["--threads", str(args.threads)]
    command += ["--step", str(args.step)] if args.step else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _hour_job(path: Path, threads: int, tuning: Tuning) -> dict:
    from watcherd.config import Settings
    from watcherd.diarize.background import Speakers
    from watcherd.engine import DecodeOptions, Engine

    engine = Engine("tiny.en", MODELS)
    engine.load()
    speakers = Speakers(MODELS, threads=threads)
    speakers.diarizer().tuning = tuning
    profile = Settings(model="tiny.en", language="en", diarize=True).profile()
    started = time.perf_counter()
    with speakers.beside(path, profile) as pending:
        transcript = engine.transcribe(path, DecodeOptions(language="en", word_timestamps=True))
        transcribed = time.perf_counter() - started
        transcript = pending.label(transcript)
    elapsed = time.perf_counter() - started
    return {
        "audio_seconds": round(transcript.audio_seconds, 1),
        "xrt_with": round(transcript.audio_seconds / elapsed, 1),
        "transcribed_at": round(transcribed, 1),
        "seconds": round(elapsed, 1),
        "speakers": len(transcript.speakers),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hour", action="store_true", help="also the 1-hour whole job")
    parser.add_argument("--no-jobs", action="store_true", help="diarization figures only")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    parser.add_argument("--step", type=float, default=None, help="seconds between windows")
    parser.add_argument("--hour-job", type=Path, help=argparse.SUPPRESS)  # --hour's child
    args = parser.parse_args()
    tuning = Tuning() if args.step is None else replace(Tuning(), step=args.step)
    if args.hour_job:
        print(json.dumps(_hour_job(args.hour_job, args.threads, tuning)))
        return
    load_before = os.getloadavg()[0]
    diarizer = load(MODELS, threads=args.threads)
    diarizer.tuning = tuning
    rows = diarize_all(diarizer, files())
    report = {"load_before": round(load_before, 2), "threads": args.threads,
              "tuning": tuning.__dict__, "files": rows}  # fmt: skip
    print(f"1-minute load before: {load_before:.2f}; tuning {tuning}; {args.threads} thread(s)\n")
    print("| set | files | DER % | DER % (count hinted) | count right | × realtime |")
    print("|---|---|---|---|---|---|")
    for group in ("real", "conversations"):
        mine = [r for r in rows if r["set"] == group]
        xrt = sum(r["seconds"] for r in mine) / sum(r["diarize_seconds"] for r in mine)
        right = sum(r["found"] == r["speakers"] for r in mine)
        der, hinted = pooled_der(mine, "der"), pooled_der(mine, "der_hinted")
        report[group] = {"der": der, "der_hinted": hinted, "count_right": right,
                         "files": len(mine), "xrt": xrt}  # fmt: skip
        print(f"| {group} | {len(mine)} | {der:.1f} | {hinted:.1f} | {right}/{len(mine)} | "
              f"{xrt:.1f} |")  # fmt: skip
    print("\n| file | speakers | found | DER % | DER % hinted |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {r['speakers']} | {r['found']} | "
              f"{100 * r['der']['diarization error rate']:.1f} | "
              f"{100 * r['der_hinted']['diarization error rate']:.1f} |")  # fmt: skip
    if not args.no_jobs:
        # tiny.en on the English ones: Thorsten speaks German
        english = [c for c in all_conversations() if "thorsten" not in c.speakers]
        report["jobs"] = jobs(english, args.threads, tuning)
        print(f"\nWhole job on the conversations: {report['jobs']}")
    if args.hour:
        report["hour"] = hour(args)
        print(f"\n1-hour whole job with diarization: {report['hour']}")
    report["load_after"] = round(os.getloadavg()[0], 2)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"diarization-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\n1-minute load after: {report['load_after']}; {out}")


if __name__ == "__main__":
    main()
