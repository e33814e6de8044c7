"""Run watcherd as a per-user service: a launchd LaunchAgent on macOS, a systemd user unit
on Linux. Renders the file with absolute paths, then drives the service manager.

launchd verbs are the modern ones (bootstrap, bootout, kickstart, kill, print); the
legacy `launchctl start|stop <label>` work on the installed agent too. Both managers
restart watcherd after a crash but not after a clean stop (exit 0).
"""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from xml.sax.saxutils import escape

from watcherd.config import Settings

LABEL = "com.watcherd.agent"
UNIT = "watcherd.service"
PLIST_TEMPLATE = f"{LABEL}.plist.template"
UNIT_TEMPLATE = f"{UNIT}.template"
EXAMPLE_CONFIG = "config.example.toml"
UNLOAD_WAIT_SECONDS = 10.0  # how long `install` waits for launchd to let go of the old job
LAUNCHD_PATH = "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


def template(name: str) -> str:
    """A file shipped in the package (`watcherd/templates/`), so that an installed wheel
    renders its service files too. The copies at the top of the source tree (`launchd/`,
    `systemd/`, `config.example.toml`) are where people look; a test keeps them equal."""
    return resources.files("watcherd").joinpath("templates", name).read_text(encoding="utf-8")


class ServiceError(RuntimeError):
    """A service command failed; the message says which and why."""


@dataclass(frozen=True)
class Paths:
    python: str
    config: Path
    log_dir: Path
    workdir: Path

    @classmethod
    def for_settings(cls, settings: Settings, config: Path) -> Paths:
        return cls(
            python=sys.executable,
            config=config.expanduser().absolute(),
            log_dir=settings.log_dir,
            workdir=settings.database.parent,
        )


def render_plist(paths: Paths, label: str = LABEL) -> str:
    values = {
        "label": label,
        "python": paths.python,
        "config": str(paths.config),
        "path": LAUNCHD_PATH,
        "workdir": str(paths.workdir),
        "stdout": str(paths.log_dir / "launchd.out.log"),
        "stderr": str(paths.log_dir / "launchd.err.log"),
    }
    return Template(template(PLIST_TEMPLATE)).substitute({k: escape(v) for k, v in values.items()})


def render_unit(paths: Paths) -> str:
    values = {"python": paths.python, "config": str(paths.config), "workdir": str(paths.workdir)}
    return Template(template(UNIT_TEMPLATE)).substitute(values)


def _run(command: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ServiceError(f"{command[0]} not found: is this the right platform?") from None
    if check and done.returncode != 0:
        reason = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        raise ServiceError(f"{' '.join(command)}: {reason}")
    return done


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text, encoding="utf-8")
    temp.chmod(0o644)  # launchd refuses group- or world-writable agents
    os.replace(temp, path)


class Launchd:
    name = "launchd"

    def __init__(self, label: str = LABEL):
        self.label = label
        self.domain = f"gui/{os.getuid()}"
        self.target = f"{self.domain}/{label}"
        self.file = Path.home() / "Library" / "LaunchAgents" / f"{label}.plist"

    def render(self, paths: Paths) -> str:
        return render_plist(paths, self.label)

    def install(self, paths: Paths) -> None:
        paths.log_dir.mkdir(parents=True, exist_ok=True)
        paths.workdir.mkdir(parents=True, exist_ok=True)
        if _run(["launchctl", "bootout", self.target], check=False).returncode == 0:
            self._wait_unloaded()  # a reinstall replaces the running job
        _write(self.file, self.render(paths))
        _run(["launchctl", "enable", self.target])
        _run(["launchctl", "bootstrap", self.domain, str(self.file)])

    def _wait_unloaded(self) -> None:
        """`bootout` may return while launchd is still stopping the job, and a bootstrap
        then fails ("Bootstrap failed: 5: Input/output error"): wait until it is gone."""
        deadline = time.monotonic() + UNLOAD_WAIT_SECONDS
        while time.monotonic() < deadline:
            if _run(["launchctl", "print", self.target], check=False).returncode != 0:
                return
            time.sleep(0.2)

    def uninstall(self) -> None:
        _run(["launchctl", "bootout", self.target], check=False)
        self.file.unlink(missing_ok=True)

    def start(self) -> None:
        _run(["launchctl", "kickstart", self.target])

    def stop(self) -> None:
        # SIGTERM: watcherd exits 0, and KeepAlive{SuccessfulExit=false} leaves it down.
        _run(["launchctl", "kill", "SIGTERM", self.target])

    def restart(self) -> None:
        _run(["launchctl", "kickstart", "-k", self.target])

    def status(self) -> str:
        done = _run(["launchctl", "print", self.target], check=False)
        return done.stdout if done.returncode == 0 else f"{self.label}: not loaded"

    def installed_program(self) -> list[str] | None:
        """The command line of the installed agent; None when none is installed."""
        try:
            plist = plistlib.loads(self.file.read_bytes())
        except FileNotFoundError:
            return None
        except (plistlib.InvalidFileException, ValueError, OSError) as exc:
            raise ServiceError(f"{self.file}: not a readable plist: {exc}") from None
        return [str(arg) for arg in plist.get("ProgramArguments", [])]

    def running_pid(self) -> int | None:
        """The agent's pid while launchd runs it, else None."""
        done = _run(["launchctl", "print", self.target], check=False)
        if done.returncode != 0 or "state = running" not in done.stdout:
            return None
        pids = [line.split("=", 1)[1] for line in done.stdout.splitlines()
                if line.strip().startswith("pid =")]  # fmt: skip
        return int(pids[0]) if pids and pids[0].strip().isdigit() else 0


class Systemd:
    name = "systemd"

    def __init__(self) -> None:
        config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
        self.file = Path(config_home) / "systemd" / "user" / UNIT

    def render(self, paths: Paths) -> str:
        return render_unit(paths)

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run(["systemctl", "--user", *args], check=check)

    def install(self, paths: Paths) -> None:
        paths.workdir.mkdir(parents=True, exist_ok=True)
        _write(self.file, self.render(paths))
        self._ctl("daemon-reload")
        self._ctl("enable", UNIT)
        self._ctl("restart", UNIT)  # starts it, or replaces a running older one

    def uninstall(self) -> None:
        self._ctl("disable", "--now", UNIT, check=False)
        self.file.unlink(missing_ok=True)
        self._ctl("daemon-reload", check=False)

    def start(self) -> None:
        self._ctl("start", UNIT)

    def stop(self) -> None:
        self._ctl("stop", UNIT)

    def restart(self) -> None:
        self._ctl("restart", UNIT)

    def status(self) -> str:
        return self._ctl("status", "--no-pager", UNIT, check=False).stdout

    def installed_program(self) -> list[str] | None:
        """The command line of the installed unit; None when none is installed."""
        try:
            text = self.file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ServiceError(f"{self.file}: cannot read: {exc.strerror}") from None
        for line in text.splitlines():
            if line.startswith("ExecStart="):
                return shlex.split(line.split("=", 1)[1])
        return []

    def running_pid(self) -> int | None:
        """The unit's main pid while it is active, else None."""
        done = self._ctl("show", "--property=ActiveState,MainPID", UNIT, check=False)
        values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        if values.get("ActiveState") != "active":
            return None
        return int(values.get("MainPID", "0") or 0)


def manager(name: str | None = None) -> Launchd | Systemd:
    """The platform's service manager, or the one named."""
    name = name or ("launchd" if sys.platform == "darwin" else "systemd")
    return Launchd() if name == "launchd" else Systemd()


def verify_unit(text: str) -> str | None:
    """Problems `systemd-analyze verify` finds in a unit, or None (also when it is absent)."""
    analyzer = shutil.which("systemd-analyze")
    if analyzer is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        unit = Path(folder) / UNIT
        unit.write_text(text)
        done = subprocess.run([analyzer, "verify", str(unit)], capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    if done.returncode != 0:
        return "\n".join(lines) or f"systemd-analyze exit code {done.returncode}"
    warnings = [line for line in lines if UNIT in line]
    return "\n".join(warnings) or None
