"""Helpers for the tests: WER, configs, running the CLI, waiting."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path


def normalise(text: str) -> list[str]:
    text = re.sub(r"[^\w\s']", " ", text.lower()).replace("'", "")
    return text.split()


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    ref, hyp = " ".join(normalise(reference)), " ".join(normalise(hypothesis))
    return jiwer.wer(ref, hyp) if hyp else 1.0


def toml_value(value) -> str:
    """A TOML literal: JSON's scalars are TOML's, tables are written inline."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def write_config(folder: Path, model_cache: Path, **overrides) -> Path:
    """A complete TOML config that keeps everything inside `folder`."""
    values = {
        "inboxes": [str(folder / "inbox")],
        "database": str(folder / "state" / "jobs.db"),
        "log_dir": str(folder / "logs"),
        "model_cache_dir": str(model_cache),
        "quiet_seconds": 0.5,
        "scan_interval_seconds": 60,
        "retry_backoff_seconds": 0.5,
    } | overrides
    lines = [f"{key} = {toml_value(value)}" for key, value in values.items()]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHERD_")}
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(*args: str, config: Path, home: Path, timeout: float = 120, env=None, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "watcherd", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or cli_env(home),
        **kwargs,
    )


def status_json(config: Path, home: Path, limit: int | None = None) -> dict:
    extra = ("--limit", str(limit)) if limit else ()
    result = run_cli("status", "--json", *extra, config=config, home=home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(predicate, timeout: float, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def without_root_powers():
    """A preexec_fn that, for root, drops the capabilities that bypass file permissions
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the child, so `chmod 000` stops it
    reading exactly as it would stop a user's daemon. None when not root."""
    if os.geteuid() != 0:
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:
        for capability in (1, 2):
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")

    return drop


def start_daemon(config: Path, home: Path, env=None, wait: bool = True, **kwargs):
    """`watcherd run` as a real subprocess; waits until `status` sees it ready: its models
    loaded, its watcher and worker running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcherd", "run", "--config", str(config)],
        env=env or cli_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )
    if wait:
        wait_for(
            lambda: (
                proc.poll() is not None
                or status_json(config, home)["daemon"].get("phase") == "ready"
            ),
            120,
            message="daemon start",
        )
        assert proc.poll() is None, proc.stderr.read()
    return proc


def stop_daemon(proc: subprocess.Popen) -> None:
    """SIGTERM, and the clean exit code it promises."""
    if proc.poll() is None:
        proc.terminate()
    assert proc.wait(30) == 0, proc.stderr.read()


def all_events(home: Path) -> list[dict]:
    """Every event in the daemon's log, in order."""
    path = home / "logs" / "watcherd.log"
    events = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            events.append(json.loads(line))
        except ValueError:  # the last line of a daemon killed mid-write
            continue
    return events


def log_events(home: Path, event: str) -> list[dict]:
    return [e for e in all_events(home) if e.get("event") == event]


def make_silent_video(path: Path, seconds: int = 1) -> None:
    """An mp4 with a video stream and no audio stream."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(10 * seconds):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_wav(path: Path, samples) -> Path:
    """16 kHz mono 16-bit PCM."""
    import wave

    import numpy as np

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def keyboard() -> None:
    """Ctrl-C (SIGINT) as at a terminal: a suite started in the background (`make test &`)
    passes its children SIGINT ignored, and Python keeps it so."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """A command on a real pseudo-terminal (120x40), as a person at a terminal runs it:
    isatty() is true for its stdin, stdout and stderr, and what it draws is read back."""

    def __init__(self, args: list[str], env: dict, columns: int = 120, rows: int = 40):
        import fcntl
        import pty
        import struct
        import termios

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, preexec_fn=keyboard)  # fmt: skip
        os.close(slave)
        self.output = b""

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def _read(self, timeout: float) -> bool:
        import select

        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the command ended and closed the terminal
            return False
        self.output += chunk
        return bool(chunk)

    def read_until(self, predicate, timeout: float, message: str = "output") -> str:
        deadline = time.monotonic() + timeout
        while not predicate(self.text):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {message}; got:\n{self.text}")
            if not self._read(0.1) and self.proc.poll() is not None:
                raise AssertionError(f"ended before {message}; got:\n{self.text}")
        return self.text

    def wait(self, timeout: float) -> int:
        """Read everything until the command ends; its exit code."""
        deadline = time.monotonic() + timeout
        while self._read(0.1) or self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"still running after {timeout}s:\n{self.text}")
        os.close(self.master)
        return self.proc.wait()
