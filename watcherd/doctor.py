"""`watcherd doctor`: check what usually keeps watcherd from picking up files, and say in
plain words what to do about each problem.

Each check is a small function that tries the real thing (lists the folder, writes a
file, loads the model, asks the service manager) and returns findings. A finding is `ok`,
`info` (worth knowing, nothing to do), `warn` or `fail`; the last two need attention and
make `doctor` exit 1. The CLI only prints them.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import shlex
import shutil
import stat
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from watcherd import privacy
from watcherd.config import Settings, load_settings
from watcherd.instance import running_daemon
from watcherd.locations import ConfigError, config_path

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"
LOW_SPACE = 1 << 30  # under 1 GiB free: a warning (a converted model alone can need more)
NO_SPACE = 100 << 20  # under 100 MiB free: transcripts and the database soon fail to write
READ_TRIES = 50  # files read in each inbox to find one the daemon cannot read
PROBE = ".watcherd-doctor-{pid}.tmp"  # hidden: the watcher ignores it


@dataclass(frozen=True)
class Finding:
    check: str  # configuration, inbox, disk, model, compute, service, log
    status: str  # ok, info, warn, fail
    summary: str  # what was found
    remedy: str | None = None  # what to do about it
    subject: str | None = None  # the path or model it is about

    @property
    def needs_attention(self) -> bool:
        return self.status in (WARN, FAIL)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Host:
    """What the checks need to know of the machine; tests describe a Mac on Linux."""

    system: str = sys.platform
    home: Path = field(default_factory=Path.home)
    python: str = sys.executable


def run(config: Path | str | None = None, manager: str | None = None) -> list[Finding]:
    """Every check, in the order a person would go through them."""
    host = Host()
    findings, settings = check_configuration(config)
    if settings is None:
        return findings
    from watcherd import service

    agent = service.manager(manager)
    try:
        program = agent.installed_program()
    except service.ServiceError:
        program = None  # check_service reports it
    python = program[0] if program else host.python  # whose access counts for the inboxes
    events = read_log(settings.log_dir)
    for inbox in settings.inbox_paths:
        findings.append(check_inbox(inbox, host, python, inbox_denial(events, inbox)))
    findings += check_disk(settings)
    findings += check_models(settings)
    findings += check_compute(host)
    findings.append(check_service(settings, config_path(config), agent, host))
    findings += check_after_jobs(settings, host)
    findings.append(check_log(settings, events))
    return findings


# --- configuration ---------------------------------------------------------------------


def check_configuration(config: Path | str | None) -> tuple[list[Finding], Settings | None]:
    file = config_path(config)
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        remedy = (
            f"Fix what is named above in {file}; config.example.toml documents every key "
            "with its default. The other checks need a valid configuration."
        )
        return [Finding("configuration", FAIL, str(exc), remedy, str(file))], None
    source = str(file) if file.exists() else f"{file} does not exist: the defaults"
    inboxes = len(settings.inboxes)
    findings = [
        Finding(
            "configuration",
            OK,
            f"{source}: valid ({inboxes} inbox{'es' if inboxes != 1 else ''}, model "
            f"{', '.join(settings.models)}, database {settings.database})",
            subject=str(file),
        )
    ]
    for inbox in settings.inbox_paths:
        if inbox == settings.database.parent or inbox in settings.database.parents:
            findings.append(
                Finding(
                    "configuration",
                    WARN,
                    f"the database {settings.database} is inside the inbox {inbox}",
                    "Set `database` to a path outside every inbox (the default is fine).",
                    str(settings.database),
                )
            )
    return findings, settings


# --- inboxes ---------------------------------------------------------------------------


def check_inbox(inbox: Path, host: Host, python: str, daemon_denial: dict | None = None) -> Finding:
    """Whether the daemon can list, read and write `inbox`: by trying each. `python` is the
    interpreter the service runs (macOS grants privacy access per program);
    `daemon_denial` is the daemon's own `inbox_unreadable` log event, if any."""
    location = privacy.protected_location(inbox, host.home) if host.system == "darwin" else None
    try:
        st = inbox.stat()
    except FileNotFoundError:
        parent = next((p for p in inbox.parents if p.exists()), Path("/"))
        remedy = f"Create it: mkdir -p {shlex.quote(str(inbox))} (the daemon also creates it "
        remedy += "when it starts)."
        if not os.access(parent, os.W_OK):
            remedy += f" {parent} is not writable by {_user()}, so neither can create it."
        return Finding("inbox", WARN, f"{inbox}: does not exist", remedy, str(inbox))
    except OSError as exc:
        return _denied(inbox, "reach", exc, host, python, location)
    if not stat.S_ISDIR(st.st_mode):
        return Finding(
            "inbox",
            FAIL,
            f"{inbox}: is not a folder",
            "Point the inbox at a folder, or move this file away.",
            str(inbox),
        )
    try:
        names = sorted(os.listdir(inbox))
    except OSError as exc:
        return _denied(inbox, "list", exc, host, python, location)
    unreadable = list(_unreadable_files(inbox, names))
    try:
        _write_probe(inbox)
    except OSError as exc:
        return _denied(inbox, "write in", exc, host, python, location)
    if daemon_denial is not None:  # doctor may list it and the daemon not: macOS privacy
        exc = OSError(daemon_denial.get("errno") or 0, daemon_denial.get("error") or "denied")
        return _denied(inbox, "list", exc, host, python, location, daemon=daemon_denial)
    if unreadable:
        shown = ", ".join(f"{name} ({reason})" for name, reason in unreadable[:3])
        more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        return Finding(
            "inbox",
            WARN,
            f"{inbox}: {len(unreadable)} file(s) cannot be read: {shown}{more}",
            f"Make them readable by {_user()} (chmod u+r), or they fail when their turn comes.",
            str(inbox),
        )
    summary = f"{inbox}: {_user()} can list, read and write it"
    if location is None:
        return Finding("inbox", OK, summary, subject=str(inbox))
    # Inside a protected place, doctor's own access proves little: it has the terminal's.
    note = (
        f" (it is in {location}: doctor ran with your terminal's access, the LaunchAgent "
        "needs its own; the daemon has not reported a refusal)"
    )
    return Finding(
        "inbox", INFO, summary + note, privacy.how_to_allow(location, python), str(inbox)
    )


def _unreadable_files(inbox: Path, names: list[str]) -> Iterator[tuple[str, str]]:
    tried = 0
    for name in names:
        path = inbox / name
        if name.startswith(".") or not path.is_file():
            continue
        if tried == READ_TRIES:
            return
        tried += 1
        try:
            with path.open("rb") as f:
                f.read(1)
        except OSError as exc:
            yield name, exc.strerror or str(exc)


def _write_probe(inbox: Path) -> None:
    """Create, write, sync and remove a hidden file: what writing transcripts needs."""
    probe = inbox / PROBE.format(pid=os.getpid())
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"\0" * 4096)
        os.fsync(fd)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def _denied(
    inbox: Path,
    action: str,
    exc: OSError,
    host: Host,
    python: str,
    location: str | None,
    daemon: dict | None = None,
) -> Finding:
    who = f"the daemon (at {daemon.get('timestamp', '?')})" if daemon else _user()
    summary = f"{inbox}: {who} cannot {action} it: {exc.strerror or exc}"
    code = exc.errno
    if location is not None and (code == errno.EPERM or daemon is not None):
        remedy = privacy.how_to_allow(location, python)
    elif code == errno.ENOSPC:
        remedy = "Its disk is full: free space there (see the disk check below)."
    elif code == errno.EROFS:
        remedy = "It is on a read-only file system: choose an inbox on a writable disk."
    elif code in (errno.EACCES, errno.EPERM):
        remedy = _permission_remedy(inbox)
    else:
        remedy = "Check the disk and the folder, then run `watcherd doctor` again."
    return Finding("inbox", FAIL, summary, remedy, str(inbox))


def _permission_remedy(inbox: Path) -> str:
    try:
        st = inbox.stat()
    except OSError:
        return f"Give {_user()} access to {inbox} and the folders above it."
    owner = _user(st.st_uid)
    mode = stat.filemode(st.st_mode)
    quoted = shlex.quote(str(inbox))
    if st.st_uid == os.geteuid():
        return f"It is yours but its mode is {mode}: chmod u+rwx {quoted}"
    return (
        f"It belongs to {owner} (mode {mode}) and the daemon runs as {_user()}: "
        f"sudo chown {_user()} {quoted}, or choose a folder of your own."
    )


def _user(uid: int | None = None) -> str:
    uid = os.geteuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


# --- disk space --------------------------------------------------------------------------


def check_disk(settings: Settings) -> list[Finding]:
    """Free space on each disk that holds an inbox, the database, the models or the log."""
    places = [(f"inbox {p}", p) for p in settings.inbox_paths] + [
        (f"the database {settings.database}", settings.database.parent),
        (f"the models {settings.model_cache_dir}", settings.model_cache_dir),
        (f"the log {settings.log_dir}", settings.log_dir),
    ]
    disks: dict[int, list[tuple[str, Path]]] = {}
    for label, path in places:
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        disks.setdefault(existing.stat().st_dev, []).append((label, existing))
    findings = []
    for entries in disks.values():
        usage = shutil.disk_usage(entries[0][1])
        labels = ", ".join(label for label, _ in entries)
        summary = f"{_size(usage.free)} free of {_size(usage.total)} on the disk of {labels}"
        status, remedy = OK, None
        if usage.free < NO_SPACE:
            status = FAIL
            remedy = "The disk is (nearly) full: transcripts and the database cannot be "
            remedy += "written. Free space there, or move these folders to another disk."
        elif usage.free < LOW_SPACE:
            status, remedy = WARN, "Space is low: free some before it runs out."
        findings.append(Finding("disk", status, summary, remedy, str(entries[0][1])))
    return findings


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


# --- the models --------------------------------------------------------------------------


def check_models(settings: Settings) -> list[Finding]:
    """Each model: found, cached (converted once), loadable, and its size. Never downloads:
    `run` sets HF_HUB_OFFLINE for the Hugging Face hub."""
    from watcherd.engine import ModelError
    from watcherd.profiles import engine_for

    findings = []
    cache = settings.model_cache_dir
    for name in settings.models:
        cached_before = set(cache.iterdir()) if cache.is_dir() else set()
        try:
            loaded = engine_for(settings, name).load()
        except ModelError as exc:
            findings.append(Finding("model", FAIL, f"{name}: {exc}", _model_remedy(name), name))
            continue
        size = sum(f.stat().st_size for f in loaded.path.iterdir() if f.is_file())
        if loaded.path.parent != cache:
            where = f"from {loaded.path}"
        elif loaded.path in cached_before:
            where = f"cached at {loaded.path}"
        else:
            where = f"converted now and cached at {loaded.path}"
        findings.append(
            Finding(
                "model",
                OK,
                f"{name}: loads in {loaded.load_seconds:.1f} s, {_size(size)} "
                f"({str(loaded.dtype).rsplit('.', 1)[-1]}), {where}",
                subject=name,
            )
        )
    return findings


def _model_remedy(name: str) -> str:
    if "/" in name and not Path(name).expanduser().exists():
        return (
            f"Download it once with network: `watcherd prepare` (or huggingface-cli download "
            f"{name}); doctor never downloads. Or set `model` to tiny.en, which works offline."
        )
    return (
        "Set `model` to tiny.en, base or small, an MLX or CTranslate2 folder, or a Hugging "
        "Face repo id; `watcherd prepare` converts and caches it."
    )


# --- compute ---------------------------------------------------------------------------


def check_compute(host: Host) -> list[Finding]:
    """The BLAS MLX uses on Linux, and whether Metal or CUDA is there."""
    import mlx.core as mx

    from watcherd import blas

    findings = []
    if host.system.startswith("linux"):
        using = blas.in_use()
        if "reference" in using:
            findings.append(
                Finding(
                    "compute",
                    WARN,
                    f"BLAS: {using}",
                    "Install OpenBLAS (Debian/Ubuntu: sudo apt-get install libopenblas0-pthread; "
                    "`make setup` does it), then restart the daemon: MLX is ~40x slower without.",
                    "blas",
                )
            )
        else:
            findings.append(Finding("compute", OK, f"BLAS: {using}", subject="blas"))
    gpus = [name for name in ("metal", "cuda") if _available(mx, name)]
    if gpus:
        findings.append(Finding("compute", OK, f"GPU: {', '.join(gpus)} available", subject="gpu"))
    elif host.system == "darwin":
        findings.append(
            Finding(
                "compute",
                FAIL,
                "GPU: Metal is not available",
                "watcherd needs an Apple Silicon Mac with macOS 14 or later, and an arm64 Python "
                "(not one running under Rosetta).",
                "gpu",
            )
        )
    else:
        findings.append(
            Finding(
                "compute",
                INFO,
                "GPU: none (no Metal or CUDA): the CPU runs the model, with ONNX Runtime",
                subject="gpu",
            )
        )
    return findings


def _available(mx, backend: str) -> bool:
    module = getattr(mx, backend, None)
    return bool(module is not None and getattr(module, "is_available", lambda: False)())


# --- the service -----------------------------------------------------------------------


def check_service(settings: Settings, config: Path, agent, host: Host) -> Finding:
    """Whether a daemon runs, and whether the installed service runs this interpreter
    with this configuration."""
    from watcherd.service import ServiceError

    daemon = running_daemon(settings.queue.lock)
    runs = f"a daemon runs (pid {daemon.get('pid')})" if daemon else "no daemon runs"
    kind = "LaunchAgent" if agent.name == "launchd" else "systemd user unit"
    try:
        program = agent.installed_program()
    except ServiceError as exc:
        return Finding(
            "service",
            FAIL,
            f"{exc}; {runs}",
            "Reinstall it: `watcherd service install`.",
            str(agent.file),
        )
    if program is None:
        if daemon:
            return Finding(
                "service",
                INFO,
                f"{runs}; it is not installed as a service",
                "`watcherd service install` starts it at every login.",
            )
        return Finding(
            "service",
            WARN,
            f"{runs}, and no {kind} is installed: nothing picks up files",
            "`watcherd service install` starts it now and at "
            "every login; or run `watcherd run` in a terminal.",
        )
    config = config.expanduser().absolute()
    expected_config = ["--config", str(config)]
    problems = []
    if not program or not Path(program[0]).exists():
        problems.append(f"runs {program[0] if program else 'nothing'}, which does not exist")
    elif os.path.realpath(program[0]) != os.path.realpath(host.python):
        problems.append(f"runs the interpreter {program[0]}, not this one ({host.python})")
    if program and program[-2:] != expected_config:
        named = program[-1] if "--config" in program else "no config"
        problems.append(f"reads {named}, not {config}")
    if problems:
        return Finding(
            "service",
            WARN,
            f"the {kind} {agent.file} {'; '.join(problems)}; {runs}",
            "Run `watcherd service install` from this installation, with this "
            "--config: it rewrites the file and restarts the service.",
            str(agent.file),
        )
    pid = agent.running_pid()
    if pid is None:
        return Finding(
            "service",
            WARN,
            f"the {kind} {agent.file} is installed but not running; {runs}",
            "`watcherd service start`; `watcherd service "
            "status` and the log (below) say why it stopped.",
            str(agent.file),
        )
    return Finding(
        "service",
        OK,
        f"the {kind} {agent.file} runs this interpreter with this config (pid {pid or '?'})",
        subject=str(agent.file),
    )


# --- the log ---------------------------------------------------------------------------

ERROR_LEVELS = ("error", "critical")


def read_log(log_dir: Path) -> list[dict]:
    """The daemon's log events that doctor uses (errors, inbox access, starts), oldest
    first, across the rotated files."""
    from watcherd.log import LOG_FILE

    files = sorted(log_dir.glob(f"{LOG_FILE}.*"), key=_backup_number, reverse=True)
    events = []
    for path in [*files, log_dir / LOG_FILE]:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if '"error"' not in line and '"inbox_' not in line and "loading_models" not in line:
                continue  # most lines: skip the parse
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def _backup_number(path: Path) -> int:
    suffix = path.name.rsplit(".", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


def inbox_denial(events: list[dict], inbox: Path) -> dict | None:
    """The daemon's report that it could not list `inbox`, from its latest run, unless it
    reported since that it can."""
    starts = [i for i, e in enumerate(events) if e.get("event") == "loading_models"]
    latest = None
    for event in events[starts[-1] if starts else 0 :]:
        if event.get("inbox") == str(inbox) and event.get("event", "").startswith("inbox_"):
            latest = event
    return latest if latest and latest.get("event") == "inbox_unreadable" else None


def check_after_jobs(settings: Settings, host: Host) -> list[Finding]:
    """Notifications, where any inbox asks for them, and the program of each hook. Seen
    from this shell: a service's PATH and session may differ (its log says so too)."""
    from watcherd import notify

    findings = []
    if settings.notifies:
        notifier = notify.for_platform(host.system)
        reason = notifier.unavailable()
        if reason:
            remedy = "Notifications will not show. " + (
                "Run the daemon in your desktop session (a systemd user unit is), and "
                "install libnotify-bin for notify-send."
                if notifier.name == "notify-send"
                else "osascript ships with macOS: check the agent's PATH."
            )
            findings.append(Finding("notify", WARN, f"notify is on, but {reason}", remedy))
        else:
            findings.append(Finding("notify", OK, f"notifications through {notifier.name}"))
    profiles = [settings.profile()] + [settings.profile(i.path / "-") for i in settings.inboxes]
    commands = {(key, getattr(p, key)) for p in profiles for key in ("on_done", "on_failed")}
    for key, argv in sorted(c for c in commands if c[1]):
        found = shutil.which(argv[0])
        if found:
            findings.append(Finding("hook", OK, f"{key}: {shlex.join(argv)}", subject=found))
            continue
        findings.append(Finding(
            "hook", FAIL, f"{key} runs {argv[0]!r}, which is not found or not executable",
            "Give the program's full path (the service's PATH is not your shell's), or make "
            "it executable (chmod +x); each job's hook fails until then.", argv[0],
        ))  # fmt: skip
    return findings


def check_log(settings: Settings, events: list[dict]) -> Finding:
    from watcherd.log import LOG_FILE

    path = settings.log_dir / LOG_FILE
    if not path.exists():
        return Finding(
            "log", INFO, f"no log yet at {path} (the daemon writes it)", subject=str(path)
        )
    errors = [e for e in events if e.get("level") in ERROR_LEVELS]
    if not errors:
        return Finding("log", INFO, f"{path}: no errors", subject=str(path))
    last = errors[-1]
    detail = last.get("error") or last.get("reason") or last.get("path") or ""
    return Finding(
        "log",
        INFO,
        f"{path}: last error at {last.get('timestamp', '?')}: "
        f"{last.get('event')}{': ' + str(detail) if detail else ''}",
        subject=str(path),
    )


# --- output ------------------------------------------------------------------------------


def render(findings: list[Finding], width: int = 100) -> str:
    """The findings as text: a line each, its remedy indented under it."""
    import textwrap

    lines = []
    for finding in findings:
        head = f"{finding.status.upper():<5} {finding.check:<14} "
        lines += textwrap.wrap(
            finding.summary,
            width,
            initial_indent=head,
            subsequent_indent=" " * len(head),
            break_on_hyphens=False,
        )
        if finding.remedy and finding.status != OK:
            lines += textwrap.wrap(
                finding.remedy,
                width,
                initial_indent=" " * len(head) + "→ ",
                subsequent_indent=" " * (len(head) + 2),
                break_on_hyphens=False,
            )
    problems = sum(f.needs_attention for f in findings)
    lines.append("")
    lines.append(
        f"{problems} problem{'s' if problems != 1 else ''} need{'s' if problems == 1 else ''} "
        "attention."
        if problems
        else "All is well."
    )
    return "\n".join(lines)
