"""Transcript files: the four formats, collision-free names, atomic writes."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from watcherd import outputs
from watcherd.transcript import Segment, Transcript

MEDIA = ["m4a", "wav", "mp3"]


def transcript(source="talk.m4a") -> Transcript:
    return Transcript(
        source=source,
        segments=(Segment(0.0, 2.5, " Hello there."), Segment(3661.25, 3663.0, "Second line.")),
        language="en",
        model="tiny.en",
        audio_seconds=3663.0,
        processing_seconds=36.6,
    )


def test_srt_numbers_cues_with_comma_millis():
    assert outputs.render_srt(transcript()) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n01:01:01,250 --> 01:01:03,000\nSecond line.\n"
    )


def test_vtt_has_header_and_dot_millis():
    text = outputs.render_vtt(transcript())
    assert text.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n")
    assert "01:01:01.250 --> 01:01:03.000\nSecond line." in text


def test_txt_is_one_line_per_segment():
    assert outputs.render_txt(transcript()) == "Hello there.\nSecond line.\n"


def test_json_holds_segments_model_language_and_durations():
    data = json.loads(outputs.render_json(transcript()))
    assert data["language"] == "en" and data["model"] == "tiny.en"
    assert data["audio_seconds"] == 3663.0 and data["processing_seconds"] == 36.6
    assert data["segments"][1] == {"id": 1, "start": 3661.25, "end": 3663.0, "text": "Second line."}
    assert data["text"] == "Hello there. Second line."


def test_outputs_go_beside_the_source_named_by_stem(tmp_path):
    source = tmp_path / "talk.m4a"
    source.write_bytes(b"x")
    paths = outputs.plan(source, ["txt", "srt", "vtt", "json"], media_extensions=MEDIA)
    written = outputs.write(transcript(), paths)
    assert sorted(os.path.basename(p) for p in written) == [
        "talk.json",
        "talk.srt",
        "talk.txt",
        "talk.vtt",
    ]


def test_names_with_several_dots_keep_all_but_the_extension(tmp_path):
    source = tmp_path / "talk.2024.v2.m4a"
    source.write_bytes(b"x")
    paths = outputs.plan(source, ["txt"], media_extensions=MEDIA)
    assert paths["txt"].name == "talk.2024.v2.txt"


def test_sources_sharing_a_stem_do_not_overwrite_each_other(tmp_path):
    (tmp_path / "talk.m4a").write_bytes(b"x")
    (tmp_path / "talk.wav").write_bytes(b"y")
    m4a = outputs.plan(tmp_path / "talk.m4a", ["txt"], media_extensions=MEDIA)
    wav = outputs.plan(tmp_path / "talk.wav", ["txt"], media_extensions=MEDIA)
    assert m4a["txt"].name == "talk.m4a.txt" and wav["txt"].name == "talk.wav.txt"


def test_a_file_that_is_not_ours_is_never_replaced(tmp_path):
    source = tmp_path / "talk.m4a"
    source.write_bytes(b"x")
    notes = tmp_path / "talk.txt"
    notes.write_text("my own notes")
    paths = outputs.plan(source, ["txt"], media_extensions=MEDIA, may_replace=lambda p: False)
    outputs.write(transcript(), paths)
    assert notes.read_text() == "my own notes"
    assert paths["txt"].name == "talk.m4a.txt"


def test_our_own_earlier_outputs_are_replaced(tmp_path):
    source = tmp_path / "talk.m4a"
    source.write_bytes(b"x")
    (tmp_path / "talk.txt").write_text("old")
    paths = outputs.plan(source, ["txt"], media_extensions=MEDIA, may_replace=lambda p: True)
    outputs.write(transcript(), paths)
    assert (tmp_path / "talk.txt").read_text() == "Hello there.\nSecond line.\n"


def test_output_dir_overrides_the_source_folder(tmp_path):
    source = tmp_path / "talk.m4a"
    out = tmp_path / "out"
    out.mkdir()
    paths = outputs.plan(source, ["srt"], output_dir=out)
    assert paths["srt"] == out / "talk.srt"


def test_a_failure_mid_way_renames_nothing(tmp_path, monkeypatch):
    source = tmp_path / "talk.m4a"
    source.write_bytes(b"x")
    paths = outputs.plan(source, ["txt", "srt", "json"], media_extensions=MEDIA)

    def broken(_transcript, _style):
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(outputs.RENDERERS, "json", broken)
    with pytest.raises(OSError):
        outputs.write(transcript(), paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.m4a"]


def test_writing_transcripts_loads_no_engine():
    """Writers and the command line handle plain `Transcript` values: no MLX, ONNX Runtime
    or PyAV is loaded to write a text file."""
    script = "import sys, watcherd.outputs, watcherd.transcript; print(sorted(sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = set(ast.literal_eval(done.stdout))
    assert "watcherd.outputs" in loaded
    assert not {"mlx", "mlx.core", "onnxruntime", "av", "numpy", "watcherd.engine"} & loaded
