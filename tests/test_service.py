"""The service files, checked key by key, and the launchctl/systemctl command lines,
checked against stand-ins on PATH that record their arguments (neither manager runs here)."""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import sys
from pathlib import Path

import pytest
from helpers import cli_env, run_cli

from watcherd import service

UID = os.getuid()


@pytest.fixture
def paths(tmp_path) -> service.Paths:
    return service.Paths(
        python=sys.executable,
        config=tmp_path / "conf & <odd>" / "config.toml",
        log_dir=tmp_path / "logs",
        workdir=tmp_path / "data",
    )


def test_the_plist_parses_and_holds_every_key(paths):
    plist = plistlib.loads(service.render_plist(paths).encode())
    assert plist["Label"] == "com.watcherd.agent"
    assert plist["ProgramArguments"] == [
        sys.executable, "-m", "watcherd", "run", "--config", str(paths.config)
    ]  # fmt: skip
    assert all(Path(p).is_absolute() for p in (plist["ProgramArguments"][0], str(paths.config)))
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ThrottleInterval"] >= 10
    assert plist["ExitTimeOut"] >= 15
    assert plist["ProcessType"] in ("Standard", "Interactive")
    path = plist["EnvironmentVariables"]["PATH"].split(":")
    assert "/opt/homebrew/bin" in path and "/usr/bin" in path
    assert plist["WorkingDirectory"] == str(paths.workdir)
    assert plist["StandardOutPath"] == str(paths.log_dir / "launchd.out.log")
    assert plist["StandardErrorPath"] == str(paths.log_dir / "launchd.err.log")


def test_the_systemd_unit_restarts_on_failure_only(paths):
    unit = service.render_unit(paths)
    assert "\nRestart=on-failure\n" in unit
    assert f"\nExecStart={sys.executable} -m watcherd run --config {paths.config}\n" in unit
    assert "\nWantedBy=default.target\n" in unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_accepts_the_unit(tmp_path):
    paths = service.Paths(sys.executable, tmp_path / "c.toml", tmp_path / "l", tmp_path)
    assert service.verify_unit(service.render_unit(paths)) is None


def test_systemd_analyze_would_catch_a_broken_unit():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze")
    assert service.verify_unit("[Service]\nExecStart=relative/path\n") is not None


# launchd as it behaves: `bootout` of a job that is not loaded fails; a booted-out job
# lingers (`print` still finds it) for two more looks before it is gone.
FAKE_LAUNCHCTL = """#!/bin/sh
echo "launchctl $*" >> "{log}"
state="{state}"
case "$1" in
  bootstrap) echo loaded > "$state" ;;
  bootout) [ "$(cat "$state" 2>/dev/null)" = loaded ] || exit 3; echo 2 > "$state" ;;
  print)
    case "$(cat "$state" 2>/dev/null)" in
      loaded) ;;
      2) echo 1 > "$state" ;;
      1) echo 0 > "$state" ;;
      *) exit 113 ;;
    esac ;;
esac
"""


@pytest.fixture
def recorder(tmp_path):
    """Stand-in launchctl and systemctl that append their arguments to a log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    scripts = {
        "launchctl": FAKE_LAUNCHCTL.format(log=log, state=tmp_path / "launchd.state"),
        "systemctl": f'#!/bin/sh\necho "systemctl $*" >> "{log}"\n',
    }
    for tool, text in scripts.items():
        script = bin_dir / tool
        script.write_text(text)
        script.chmod(0o755)
    env = cli_env(tmp_path) | {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return env, log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_launchd_commands_use_the_modern_verbs(tmp_path, config_file, recorder):
    env, log = recorder
    target = f"gui/{UID}/com.watcherd.agent"
    plist = tmp_path / "Library" / "LaunchAgents" / "com.watcherd.agent.plist"

    def service_cli(*args):
        result = run_cli("service", *args, "--manager", "launchd", config=config_file,
                         home=tmp_path, env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result

    service_cli("install")
    assert calls(log) == [
        f"launchctl bootout {target}",
        f"launchctl enable {target}",
        f"launchctl bootstrap gui/{UID} {plist}",
    ]
    log.unlink()
    service_cli("install")  # again: waits until launchd has let go of the running job
    assert calls(log) == [
        f"launchctl bootout {target}",
        *[f"launchctl print {target}"] * 3,
        f"launchctl enable {target}",
        f"launchctl bootstrap gui/{UID} {plist}",
    ]
    assert stat.S_IMODE(plist.stat().st_mode) == 0o644
    assert plistlib.loads(plist.read_bytes())["ProgramArguments"][-1] == str(config_file)
    log.unlink()
    for verb in ("start", "stop", "restart", "status", "uninstall"):
        service_cli(verb)
    assert calls(log) == [
        f"launchctl kickstart {target}",
        f"launchctl kill SIGTERM {target}",
        f"launchctl kickstart -k {target}",
        f"launchctl print {target}",
        f"launchctl bootout {target}",
    ]
    assert not plist.exists()


def test_systemd_commands_drive_a_user_unit(tmp_path, config_file, recorder):
    env, log = recorder
    unit = tmp_path / ".config" / "systemd" / "user" / "watcherd.service"
    for verb in ("install", "start", "stop", "restart", "status"):
        result = run_cli("service", verb, "--manager", "systemd", config=config_file,
                         home=tmp_path, env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr
    assert unit.exists() and "Restart=on-failure" in unit.read_text()
    assert calls(log) == [
        "systemctl --user daemon-reload",
        "systemctl --user enable watcherd.service",
        "systemctl --user restart watcherd.service",
        "systemctl --user start watcherd.service",
        "systemctl --user stop watcherd.service",
        "systemctl --user restart watcherd.service",
        "systemctl --user status --no-pager watcherd.service",
    ]


def test_install_print_only_prints(tmp_path, config_file, recorder):
    env, log = recorder
    result = run_cli("service", "install", "--print", "--manager", "launchd",
                     config=config_file, home=tmp_path, env=env)  # fmt: skip
    assert result.returncode == 0
    assert plistlib.loads(result.stdout.encode())["Label"] == "com.watcherd.agent"
    assert calls(log) == [] and not (tmp_path / "Library").exists()


def test_a_failing_service_manager_is_reported(tmp_path, config_file, recorder):
    env, _ = recorder
    bin_dir = Path(env["PATH"].split(":")[0])
    (bin_dir / "systemctl").write_text("#!/bin/sh\necho 'Failed to connect to bus' >&2\nexit 1\n")
    result = run_cli("service", "start", "--manager", "systemd", config=config_file,
                     home=tmp_path, env=env)  # fmt: skip
    assert result.returncode == 1 and "Failed to connect to bus" in result.stderr
