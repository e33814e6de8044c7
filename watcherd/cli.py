"""The `watcherd` command: a thin layer over the modules. Exit codes: 0 ok, 1 failure,
2 usage error, 75 already running (or the database busy), 78 bad configuration (sysexits.h)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from watcherd import __version__
from watcherd.locations import ConfigError
from watcherd.store import STATES

if TYPE_CHECKING:
    from watcherd.config import Settings

EX_FAILURE = 1
EX_TEMPFAIL = 75
EX_CONFIG = 78


def _settings(config: Path | None) -> Settings:
    from watcherd.config import load_settings  # pydantic: not for `status`, which starts fast

    try:
        return load_settings(config)
    except ConfigError as exc:
        _bad_configuration(exc)


def _bad_configuration(exc: Exception):
    click.echo(f"watcherd: bad configuration: {exc}", err=True)
    sys.exit(EX_CONFIG)


config_option = click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path),
    default=None,
    help="Settings file (TOML). Default: $WATCHERD_CONFIG or ~/.config/watcherd/config.toml.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="watcherd")
def cli() -> None:
    """Drop audio or video into an inbox folder; get transcripts beside each file."""


@cli.command()
@config_option
def run(config: Path | None) -> None:
    """Run the daemon in the foreground (launchd and systemd start it this way)."""
    from watcherd import log
    from watcherd.daemon import Daemon
    from watcherd.engine import ModelError
    from watcherd.instance import AlreadyRunning

    settings = _settings(config)
    log.configure(
        settings.log_level, settings.log_dir, settings.log_max_bytes, settings.log_backups
    )
    try:
        code = Daemon(settings).run()
    except AlreadyRunning as exc:
        click.echo(f"watcherd: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)
    except ModelError as exc:
        click.echo(f"watcherd: bad configuration: model: {exc}", err=True)
        sys.exit(EX_CONFIG)
    # Everything is closed by now. Skip interpreter teardown: MLX's per-thread streams,
    # created on the worker thread, can abort() in C++ destructors at exit.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _job_dict(job) -> dict:
    return {
        "id": job.id,
        "path": job.path,
        "state": job.state,
        "error": job.error,
        "progress": job.progress,
        "attempts": job.attempts,
        "audio_seconds": job.audio_seconds,
        "processing_seconds": job.processing_seconds,
        "speed": round(job.speed, 2) if job.speed else None,
        "outputs": job.outputs,
        "model": job.model,
        "language": job.language,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "hook": {"state": job.hook_state, "attempts": job.hook_attempts, "error": job.hook_error}
        if job.hook_state
        else None,
    }


def _open_store(settings: Settings, readonly: bool = False):
    from watcherd.store import Store

    return Store(settings.database, readonly=readonly, busy_timeout=settings.busy_timeout_seconds)


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.option("--limit", default=20, show_default=True, help="How many recent jobs to list.")
def status(config: Path | None, as_json: bool, limit: int) -> None:
    """Show the queue: counts per state, the running job, the latest jobs."""
    from watcherd import locations
    from watcherd.instance import running_daemon
    from watcherd.store import Store

    try:
        queue = locations.queue(config)  # the queue's settings only: see `locations`
    except ConfigError as exc:
        _bad_configuration(exc)
    daemon = running_daemon(queue.lock)
    if daemon is None:  # perhaps the configuration is why: check all of it, as `run` will
        _settings(config)
    counts, jobs, running = dict.fromkeys(STATES, 0), [], []
    if queue.database.exists():
        # Read-only: never migrates, never holds up the daemon's writes.
        store = Store(queue.database, readonly=True, busy_timeout=queue.busy_timeout_seconds)
        try:
            # Version 0: a daemon starting this instant has created the file, not the table.
            if store.schema_version > 0:
                counts, jobs = store.counts(), store.jobs(limit=limit)
                running = store.jobs(state="running")
        except sqlite3.OperationalError as exc:  # locked past the busy timeout
            click.echo(f"watcherd: {queue.database}: {exc}; try again", err=True)
            sys.exit(EX_TEMPFAIL)
        finally:
            store.close()
    if as_json:
        payload = {
            "daemon": _daemon_dict(daemon),
            "database": str(queue.database),
            "counts": counts,
            "jobs": [_job_dict(j) for j in jobs],
        }
        click.echo(json.dumps(payload, ensure_ascii=False))
        return
    click.echo(_daemon_line(daemon))
    click.echo("queue: " + (", ".join(f"{n} {s}" for s, n in counts.items()) or "empty"))
    for job in running:
        click.echo(f"running: #{job.id} {job.path} {job.progress:.0f}%")
    if jobs:
        click.echo("")
        click.echo(_table(jobs))


def _daemon_dict(info: dict | None) -> dict:
    if not info:
        return {"running": False}
    started = info.get("started_at")
    return {
        "running": True,
        **info,
        "uptime_seconds": round(time.time() - started, 1) if started else None,
    }


def _daemon_line(info: dict | None) -> str:
    if not info:
        return "daemon: not running"
    d = _daemon_dict(info)
    uptime = _duration(d.get("uptime_seconds") or 0)
    if d.get("phase") == "starting":  # the models load (or convert, on a first start)
        return f"daemon: starting (pid {d.get('pid')}, up {uptime}, loading model {d.get('model')})"
    return (
        f"daemon: running (pid {d.get('pid')}, up {uptime}, model {d.get('model')}, "
        f"compute {d.get('compute')}, BLAS {d.get('blas')})"
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _table(jobs) -> str:
    """The latest jobs, a line each and an error under its job. By hand, not `tabulate`
    (which sqlite-utils installs): importing it reads package metadata, about 40 ms, a
    third of the time `status` may take to answer."""
    hooks = any(job.hook_state for job in jobs)  # the column only where hooks are used
    header = ("ID", "STATE", "AUDIO", "SPEED", *(("HOOK",) if hooks else ()), "FILE / ERROR")
    rows = []
    for job in jobs:
        speed = f"{job.speed:.1f}x" if job.speed else "-"
        state = f"{job.state} {job.progress:.0f}%" if job.state == "running" else job.state
        notes = [job.error, f"hook: {job.hook_error}" if job.hook_error else None]
        detail = job.path + "".join(f"\n{'':>6}  ↳ {note}" for note in notes if note)
        hook = (_hook_cell(job),) if hooks else ()
        rows.append((str(job.id), state, _duration(job.audio_seconds), speed, *hook, detail))
    columns = len(header) - 1
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(columns)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in [header, *rows]
    )


def _hook_cell(job) -> str:
    """How the job's hook went: "ok", "failed", "timed out", "running (2)", or "-"."""
    if not job.hook_state:
        return "-"
    shown = {"done": "ok", "timed_out": "timed out"}.get(job.hook_state, job.hook_state)
    return f"{shown} ({job.hook_attempts})" if (job.hook_attempts or 0) > 1 else shown


@cli.command()
@config_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Queue again even if this content was transcribed.")
def add(config: Path | None, paths: tuple[Path, ...], force: bool) -> None:
    """Queue files by hand (the daemon picks them up)."""
    from watcherd.store import content_hash

    settings = _settings(config)
    store = _open_store(settings)
    failures = 0
    try:
        for path in paths:
            path = path.absolute()
            if not path.is_file():
                click.echo(f"{path}: not a file", err=True)
                failures += 1
                continue
            st = path.stat()
            try:
                digest = content_hash(path)
            except OSError as exc:
                click.echo(f"{path}: cannot read: {exc.strerror}", err=True)
                failures += 1
                continue
            job, created = store.enqueue(
                path, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=digest
            )
            if created:
                click.echo(f"queued #{job.id} {path}")
            elif force or job.state in ("failed", "cancelled"):
                job = store.retry(job.id)
                click.echo(f"queued again #{job.id} {path}")
            else:
                click.echo(f"already {job.state} #{job.id} {path} (use --force to redo)")
    finally:
        store.close()
    sys.exit(EX_FAILURE if failures else 0)


def _change_job(config: Path | None, job_id: int, action: str) -> None:
    settings = _settings(config)
    store = _open_store(settings)
    try:
        job = store.get(job_id)
        job = getattr(store, action)(job_id)
    except KeyError:
        click.echo(f"watcherd: no job #{job_id}", err=True)
        sys.exit(EX_FAILURE)
    finally:
        store.close()
    click.echo(f"#{job.id} {job.state} {job.path}")


@cli.command()
@config_option
@click.argument("job_id", type=int)
def retry(config: Path | None, job_id: int) -> None:
    """Queue a failed, cancelled or done job again."""
    _change_job(config, job_id, "retry")


@cli.command()
@config_option
@click.argument("job_id", type=int)
def cancel(config: Path | None, job_id: int) -> None:
    """Cancel a queued or running job."""
    _change_job(config, job_id, "cancel")


@cli.command()
@config_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write transcripts here instead of beside each file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
def transcribe(
    config: Path | None, paths: tuple[Path, ...], output_dir: Path | None, as_json: bool
) -> None:
    """Transcribe files now, without the daemon, loading the model once. The outputs are
    named and laid out as the daemon would; no hook runs and nothing is skipped."""
    from watcherd import log, outputs
    from watcherd.engine import AudioError, ModelError
    from watcherd.profiles import decode_options, engine_for, md_folder, placement, style

    settings = _settings(config)
    log.configure(settings.log_level if not as_json else "warning")
    if output_dir:
        output_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in paths:
        profile = settings.profile(path)  # a file inside an inbox gets that inbox's settings
        try:
            if not output_dir and (vault := md_folder(profile)):
                outputs.check_writable(vault, create=True)
            transcript = engine_for(settings, profile.model).transcribe(
                path, decode_options(profile)
            )
            # --output-dir takes every format, Markdown too: the command line wins.
            where = placement(profile, transcript)
            planned = outputs.plan(
                path.absolute(),
                profile.formats,
                output_dir=output_dir,
                placement=replace(where, folders={}) if output_dir else where,
                media_extensions=settings.media_extensions,
            )
            written = outputs.write(transcript, planned, style(profile))
        except ModelError as exc:
            click.echo(f"watcherd: bad configuration: model: {exc}", err=True)
            sys.exit(EX_CONFIG)
        except (AudioError, OSError) as exc:
            click.echo(f"watcherd: {exc}", err=True)
            failures += 1
            continue
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "path": str(path),
                        "text": transcript.text,
                        "language": transcript.language,
                        "audio_seconds": transcript.audio_seconds,
                        "processing_seconds": transcript.processing_seconds,
                        "outputs": written,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            click.echo(
                f"{path}: {transcript.audio_seconds:.1f}s of audio in "
                f"{transcript.processing_seconds:.1f}s -> {', '.join(written)}"
            )
    sys.exit(EX_FAILURE if failures else 0)


@cli.command()
@config_option
def prepare(config: Path | None) -> None:
    """Convert and cache the configured model now (setup runs this once)."""
    from watcherd.engine import ModelError
    from watcherd.profiles import engine_for

    settings = _settings(config)
    for model in settings.models:
        try:
            loaded = engine_for(settings, model).load()
        except ModelError as exc:
            click.echo(f"watcherd: bad configuration: model: {exc}", err=True)
            sys.exit(EX_CONFIG)
        click.echo(f"model {model}: {loaded.path} ({loaded.dtype})")


@cli.group()
def service() -> None:
    """Run watcherd as a service: launchd (macOS) or a systemd user unit (Linux)."""


manager_option = click.option(
    "--manager", type=click.Choice(["launchd", "systemd"]), default=None,
    help="Service manager (default: launchd on macOS, systemd elsewhere).",
)  # fmt: skip


def _service_call(manager_name: str | None, action: str) -> None:
    from watcherd import service as svc

    try:
        result = getattr(svc.manager(manager_name), action)()
    except svc.ServiceError as exc:
        click.echo(f"watcherd: {exc}", err=True)
        sys.exit(EX_FAILURE)
    if isinstance(result, str):
        click.echo(result.rstrip())


@service.command("install")
@config_option
@manager_option
@click.option(
    "--print", "print_only", is_flag=True, help="Print the rendered file; change nothing."
)
def service_install(config: Path | None, manager: str | None, print_only: bool) -> None:
    """Install and start the service, with absolute paths to this interpreter and config."""
    from watcherd import service as svc
    from watcherd.locations import config_path

    settings = _settings(config)
    path = config_path(config)
    chosen = svc.manager(manager)
    paths = svc.Paths.for_settings(settings, path)
    if print_only:
        click.echo(chosen.render(paths), nl=False)
        return
    if not path.exists():  # the service names this file, so it must exist
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(svc.template(svc.EXAMPLE_CONFIG), encoding="utf-8")
        click.echo(f"wrote the default settings to {path}")
    try:
        chosen.install(paths)
    except svc.ServiceError as exc:
        click.echo(f"watcherd: {exc}", err=True)
        sys.exit(EX_FAILURE)
    click.echo(f"installed {chosen.file} and started it ({chosen.name})")


for _action, _help in [
    ("uninstall", "Stop the service and remove its file."),
    ("start", "Start the installed service."),
    ("stop", "Stop the service cleanly (it stays stopped until started)."),
    ("restart", "Restart the service."),
    ("status", "Show the service manager's view of the service."),
]:

    def _command(config: Path | None, manager: str | None, _action: str = _action) -> None:
        _settings(config)  # a bad configuration is reported here, not by a failing service
        _service_call(manager, _action)

    service.command(_action, help=_help)(config_option(manager_option(_command)))


NEEDS_MLX = {"run", "transcribe", "prepare"}


def main() -> None:
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if command in NEEDS_MLX:
        from watcherd.blas import ensure_fast_blas

        ensure_fast_blas(sys.argv)
    cli(prog_name="watcherd")


if __name__ == "__main__":
    main()
