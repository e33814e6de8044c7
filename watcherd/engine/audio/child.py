"""Decoding a long file in a child process, where PyAV's work cannot hold up the caller.

PyAV hands each packet back through Python: ~16 packets a second of audio for a WAV, ~45
for AAC. In the daemon's process that is tens of thousands of short holds of the GIL per
hour of audio, taken from the thread that feeds an accelerator its decoding steps. A child
process decodes the same way (`decode.stream_audio`, run as a script: it imports only
PyAV and NumPy) and writes raw samples down a pipe, which the reader takes in whole
blocks with the GIL released. Starting the child costs a Python start-up, so only long
files on machines with cores to spare go this way (`lightning`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from watcherd.engine.audio import decode


def stream_audio(path: Path | str, block_samples: int) -> Iterator[np.ndarray]:
    """As `decode.stream_audio`: the same samples in the same blocks, the same errors."""
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: it can never fill up
        command = [sys.executable, decode.__file__, str(path)]
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=errors)  # fmt: skip
        try:
            while (block := _read(child.stdout, block_samples)).size:
                yield block
            if child.wait() != 0:
                errors.seek(0)
                transient, _, cause = errors.read().decode("utf-8", "replace").partition("\t")
                if not cause:  # the child died without saying why
                    cause = f"decoding stopped (exit status {child.returncode})"
                raise decode.AudioError(path, cause.strip(), transient=transient == "1")
        finally:
            child.stdout.close()
            if child.poll() is None:  # the caller stopped early
                child.kill()
            child.wait()


def _read(pipe, samples: int) -> np.ndarray:
    """Up to `samples` samples; fewer only at the end of the stream."""
    block = np.empty(samples, np.float32)
    view, filled = memoryview(block).cast("B"), 0
    while filled < view.nbytes and (got := pipe.readinto(view[filled:])):
        filled += got
    return block[: filled // 4]
