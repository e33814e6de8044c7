"""`make` picks its interpreter with scripts/find-python: checked with stand-in interpreters,
`uname` and `sw_vers` on an otherwise empty PATH."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "find-python"


def stand_in(folder: Path, name: str, output: str, code: int = 0) -> Path:
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '{output}'\nexit {code}\n")
    path.chmod(0o755)
    return path


def mac(folder: Path, machine: str) -> None:
    """`uname -s` says Darwin, `uname -m` the machine."""
    uname = folder / "uname"
    uname.write_text(f'#!/bin/sh\n[ "$1" = -m ] && echo {machine} || echo Darwin\n')
    uname.chmod(0o755)


def find(folder: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT)], capture_output=True, text=True, env={"PATH": str(folder), **env}
    )


@pytest.fixture
def linux(tmp_path) -> Path:
    stand_in(tmp_path, "uname", "Linux")
    return tmp_path


def test_the_newest_supported_python_on_path_wins(linux):
    stand_in(linux, "python3.11", "3.11")
    stand_in(linux, "python3.12", "3.12")
    stand_in(linux, "python3", "3.9")
    done = find(linux)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(linux / "python3.12")


def test_a_candidate_that_does_not_run_is_skipped(linux):
    # A pyenv shim for a version that is not selected exits 127 and prints nothing useful.
    stand_in(linux, "python3.13", "pyenv: python3.13: command not found", code=127)
    stand_in(linux, "python3.10", "3.10")
    assert find(linux).stdout.strip() == str(linux / "python3.10")


def test_plain_python3_counts_when_it_is_new_enough(linux):
    stand_in(linux, "python3", "3.11")
    assert find(linux).stdout.strip() == str(linux / "python3")


def test_apples_python_3_9_alone_gives_one_sentence_saying_what_to_install(tmp_path):
    mac(tmp_path, "arm64")
    stand_in(tmp_path, "sw_vers", "14.4.1")
    stand_in(tmp_path, "python3", "3.9")
    done = find(tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    message = done.stderr.strip()
    assert message.count("\n") == 0
    assert "Python 3.10 or newer" in message and "brew install python@3.12" in message


def test_the_python_variable_overrides_the_search_and_is_checked(linux):
    chosen = stand_in(linux, "my-python", "3.12")
    stand_in(linux, "python3.13", "3.13")
    assert find(linux, PYTHON=str(chosen)).stdout.strip() == str(chosen)
    old = stand_in(linux, "old-python", "3.8")
    done = find(linux, PYTHON=str(old))
    assert done.returncode == 1 and "not a Python 3.10 or newer" in done.stderr


@pytest.mark.parametrize(
    ("machine", "release", "complaint"),
    [
        ("x86_64", "14.4", "Apple Silicon"),
        ("arm64", "13.4", "macOS 13.5 or newer"),
        ("arm64", "12.7.6", "macOS 13.5 or newer"),
    ],
)
def test_an_intel_mac_or_an_old_macos_is_refused_before_any_python_is_tried(
    tmp_path, machine, release, complaint
):
    mac(tmp_path, machine)
    stand_in(tmp_path, "sw_vers", release)
    tried = tmp_path / "tried"
    candidate = stand_in(tmp_path, "python3.12", "3.12")
    candidate.write_text(f"#!/bin/sh\n: > '{tried}'\necho 3.12\n")  # no `touch` on PATH
    done = find(tmp_path)
    assert done.returncode == 1 and complaint in done.stderr
    assert not tried.exists()


def test_a_supported_mac_gets_its_python(tmp_path):
    mac(tmp_path, "arm64")
    stand_in(tmp_path, "sw_vers", "13.5")
    stand_in(tmp_path, "python3.13", "3.13")
    assert find(tmp_path).stdout.strip() == str(tmp_path / "python3.13")
