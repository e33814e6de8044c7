"""watcherd as an installed package: the wheel carries what it needs (service templates,
the example config), and works from a fresh virtual env outside the source tree."""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_env, wer, write_config

from watcherd import service

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("shipped", "where_people_look"),
    [
        (service.PLIST_TEMPLATE, "launchd/com.watcherd.agent.plist.template"),
        (service.UNIT_TEMPLATE, "systemd/watcherd.service.template"),
        (service.EXAMPLE_CONFIG, "config.example.toml"),
    ],
)
def test_the_files_people_read_are_the_files_the_package_ships(shipped, where_people_look):
    assert service.template(shipped) == (ROOT / where_people_look).read_text(encoding="utf-8"), (
        f"{where_people_look} and watcherd/templates/{shipped} differ: edit both"
    )


def run(*command, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin folder of a fresh virtual env holding the wheel built from this tree."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".dev", "build", "*.egg-info", "__pycache__", "data", "results",
    ))  # fmt: skip
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "--wheel-dir", str(work / "dist"), str(source))  # fmt: skip
    (wheel,) = (work / "dist").glob("watcherd-*.whl")
    venv = work / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    if sys.platform == "linux":  # as the Makefile does: the CPU build of torch, not CUDA's
        run(*pip, "torch==2.13.0", timeout=900)
    run(*pip, str(wheel), timeout=900)
    return venv / "bin"


@pytest.fixture
def elsewhere(tmp_path) -> dict:
    """A working folder and a HOME outside the source tree."""
    (tmp_path / "cwd").mkdir()
    return {"cwd": tmp_path / "cwd", "env": cli_env(tmp_path)}


@pytest.mark.timeout(1800)
def test_the_installed_package_runs_from_anywhere(installed, elsewhere):
    located = run(str(installed / "python"), "-c", "import watcherd; print(watcherd.__file__)",
                  **elsewhere)  # fmt: skip
    assert Path(located.stdout.strip()).is_relative_to(installed.parent)
    version = run(str(installed / "watcherd"), "--version", **elsewhere)
    assert version.stdout.startswith("watcherd, version ")


def test_the_installed_package_renders_both_service_files(installed, elsewhere):
    watcherd = str(installed / "watcherd")
    plist = run(watcherd, "service", "install", "--print", "--manager", "launchd", **elsewhere)
    arguments = plistlib.loads(plist.stdout.encode())["ProgramArguments"]
    assert arguments[:4] == [str(installed / "python"), "-m", "watcherd", "run"]
    unit = run(watcherd, "service", "install", "--print", "--manager", "systemd", **elsewhere)
    assert f"\nExecStart={installed / 'python'} -m watcherd run --config " in unit.stdout


def test_the_installed_package_transcribes_real_speech(
    installed, elsewhere, tmp_path, model_cache, audio_dir, manifest
):
    config = write_config(tmp_path, model_cache)
    done = run(str(installed / "watcherd"), "transcribe", "--json", "--config", str(config),
               "--output-dir", str(tmp_path / "out"), str(audio_dir / "jfk.flac"),
               timeout=600, **elsewhere)  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert wer(manifest["jfk.flac"]["reference"], result["text"]) <= 0.10
    assert sorted(os.path.basename(p) for p in result["outputs"]) == [
        "jfk.json", "jfk.srt", "jfk.txt", "jfk.vtt"
    ]  # fmt: skip
