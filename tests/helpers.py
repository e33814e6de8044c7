"""Helpers for the tests: WER, configs, running the CLI, waiting."""

from __future__ import annotations

import json
import os
import re
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
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
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


def status_json(config: Path, home: Path) -> dict:
    result = run_cli("status", "--json", config=config, home=home)
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
