"""The `watcherd` command: a thin layer over the modules. Exit codes: 0 ok, 1 failure,
2 usage error, 75 already running (or the database busy), 78 bad configuration (sysexits.h)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from watcherd import __version__
from watcherd.locations import ConfigError
from watcherd.store import PRIORITIES, STATES

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
    from watcherd.fleet import WorkerNameTaken
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
    except (ConfigError, WorkerNameTaken) as exc:  # the extra missing; a name in use
        _bad_configuration(exc)
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
        "priority": job.priority,
        "attempts": job.attempts,
        "interrupted": job.interrupted,
        "stalls": job.stalls,
        "waits": job.waits,
        "audio_seconds": job.audio_seconds,
        "processing_seconds": job.processing_seconds,
        "speed": round(job.speed, 2) if job.speed else None,
        "outputs": job.outputs,
        "worker": job.worker,
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
    from watcherd.store import open_store

    try:
        return open_store(settings, readonly=readonly)
    except ConfigError as exc:  # a postgresql:// database without the extra installed
        _bad_configuration(exc)


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.option("--limit", default=20, show_default=True, help="How many recent jobs to list.")
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between refreshes with --watch.",
)
def status(config: Path | None, as_json: bool, limit: int, watch: bool, interval: float) -> None:
    """Show the queue: counts per state, the running job and its ETA, what waits, the
    latest jobs."""
    from watcherd import locations

    try:
        queue = locations.queue(config)  # the queue's settings only: see `locations`
    except ConfigError as exc:
        _bad_configuration(exc)
    snapshot = _snapshot(config, queue, limit)
    if not watch:
        click.echo(_status_json(snapshot) if as_json else _status_text(snapshot))
        return
    try:
        if as_json or not sys.stdout.isatty():  # a log of snapshots, for scripts
            while True:
                click.echo(_status_json(snapshot) if as_json else _status_text(snapshot) + "\n")
                time.sleep(interval)
                snapshot = _snapshot(config, queue, limit)
        else:
            _watch(lambda: _snapshot(config, queue, limit), snapshot, interval)
    except KeyboardInterrupt:  # Ctrl-C is how a watch ends
        return


def _watch(read, snapshot: dict, interval: float) -> None:
    """Redraw the status in place (rich's Live display) until Ctrl-C; the last screen
    stays."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    def frame(snapshot: dict) -> Text:
        clock = time.strftime("%H:%M:%S")
        heading = f"watcherd status, every {interval:g} s, {clock} (Ctrl-C to stop)\n\n"
        return Text(heading + _status_text(snapshot))

    console = Console(highlight=False)
    with Live(frame(snapshot), console=console, auto_refresh=False,
              vertical_overflow="ellipsis") as live:  # fmt: skip
        while True:
            time.sleep(interval)
            live.update(frame(read()), refresh=True)


def _snapshot(config: Path | None, queue, limit: int) -> dict:
    """Everything `status` shows, read at once: the daemon, the counts, the latest jobs,
    the running job, what waits and how fast the queue goes."""
    from watcherd.instance import running_daemon
    from watcherd.locations import is_postgres
    from watcherd.store import open_store

    daemon = running_daemon(queue.lock)
    if daemon is None:  # perhaps the configuration is why: check all of it, as `run` will
        _settings(config)
    snapshot = {
        "daemon": daemon,
        "database": queue.database,
        "counts": dict.fromkeys(STATES, 0),
        "jobs": [],
        "running": [],
        "outlook": None,
        "next": None,
        "paused": False,
        "workers": [],
        "lease_seconds": queue.lease_seconds,
        "shared": is_postgres(queue.database),
        "now": time.time(),
    }
    if not snapshot["shared"] and not queue.database.exists():
        return snapshot
    # Read-only: never migrates, never holds up the daemon's writes.
    try:
        store = open_store(queue.database, readonly=True, busy_timeout=queue.busy_timeout_seconds,
                           worker=queue.worker_name, inboxes=queue.inboxes)  # fmt: skip
    except ConfigError as exc:  # a postgresql:// database without the extra installed
        _bad_configuration(exc)
    except Exception as exc:  # the server cannot be reached
        click.echo(f"watcherd: {_where(queue.database)}: {_first_line(exc)}; try again", err=True)
        sys.exit(EX_TEMPFAIL)
    try:
        version = store.schema_version
        # Version 0: a daemon starting this instant has created the file, not the table.
        if version > 0:
            snapshot["counts"] = store.counts()
            snapshot["jobs"] = store.jobs(limit=limit)
            snapshot["running"] = store.jobs(state="running")
            snapshot["outlook"] = store.outlook()
        if version == len(store.migrations):  # an older daemon's database lacks what is newer
            snapshot["next"] = store.next_job()
            snapshot["paused"] = store.paused()
            snapshot["workers"] = store.workers()
    except store.errors as exc:  # locked past the busy timeout, or the server went away
        click.echo(f"watcherd: {_where(queue.database)}: {_first_line(exc)}; try again", err=True)
        sys.exit(EX_TEMPFAIL)
    finally:
        store.close()
    return snapshot


def _where(database) -> str:
    """The database, as said to the user: a server by its host and name only."""
    if isinstance(database, str) and "@" in database:
        return "postgresql://" + database.split("@", 1)[1]
    return str(database)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _silent(worker, now: float, lease_seconds: float) -> bool:
    """Not heard from for longer than a lease: the machine may be gone (its jobs go back to
    the queue); a daemon that stops cleanly leaves the list instead."""
    return now - worker.heartbeat_at > lease_seconds


def _worker_dict(worker, now: float, lease_seconds: float) -> dict:
    return {
        "name": worker.name,
        "host": worker.host,
        "pid": worker.pid,
        "model": worker.model,
        "job": worker.job_id,
        "speed": None if worker.speed is None else round(worker.speed, 2),
        "started_at": worker.started_at,
        "heartbeat_at": worker.heartbeat_at,
        "heartbeat_age_seconds": round(now - worker.heartbeat_at, 1),
        "silent": _silent(worker, now, lease_seconds),
    }


def _worker_line(worker, now: float, lease_seconds: float) -> str:
    doing = f"job #{worker.job_id}" if worker.job_id else "idle"
    speed = f", last job {worker.speed:.1f}x" if worker.speed else ""
    age = max(now - worker.heartbeat_at, 0)
    silent = " (silent past its lease: gone?)" if _silent(worker, now, lease_seconds) else ""
    return (
        f"  {worker.name} on {worker.host} (pid {worker.pid}): {worker.model}, {doing}{speed}, "
        f"heartbeat {age:.0f} s ago{silent}"
    )


def _queue_eta(snapshot: dict) -> float | None:
    """Seconds until the queue is empty: the running jobs' rest, then the waiting audio at
    the recent speed. None without a speed, or while a waiting file's length is unknown."""
    outlook = snapshot["outlook"]
    if outlook is None or outlook.speed is None or outlook.unknown_length:
        return None
    rest = [job.remaining_seconds(outlook.speed, snapshot["now"]) for job in snapshot["running"]]
    if None in rest:
        return None
    return sum(rest) + outlook.waiting_audio_seconds / outlook.speed


def _status_json(snapshot: dict) -> str:
    outlook, now = snapshot["outlook"], snapshot["now"]
    speed = outlook.speed if outlook else None

    def running(job) -> dict:
        rest = job.remaining_seconds(speed, now)
        return _job_dict(job) | {"eta_seconds": None if rest is None else round(rest, 1)}

    queue = None
    if outlook is not None:
        eta = _queue_eta(snapshot)
        queue = {
            "waiting": outlook.waiting,
            "waiting_audio_seconds": round(outlook.waiting_audio_seconds, 1),
            "unknown_length": outlook.unknown_length,
            "speed": None if speed is None else round(speed, 2),
            "speed_jobs": outlook.speed_jobs,
            "eta_seconds": None if eta is None else round(eta, 1),
            "next": snapshot["next"].id if snapshot["next"] else None,
        }
    payload = {
        "daemon": _daemon_dict(snapshot["daemon"]),
        "paused": snapshot["paused"],
        "database": _where(snapshot["database"]),
        "workers": [_worker_dict(w, now, snapshot["lease_seconds"]) for w in snapshot["workers"]],
        "counts": snapshot["counts"],
        "running": [running(job) for job in snapshot["running"]],
        "queue": queue,
        "jobs": [_job_dict(j) for j in snapshot["jobs"]],
    }
    return json.dumps(payload, ensure_ascii=False)


def _status_text(snapshot: dict) -> str:
    counts, outlook, now = snapshot["counts"], snapshot["outlook"], snapshot["now"]
    speed = outlook.speed if outlook else None
    lines = [_daemon_line(snapshot["daemon"])]
    if snapshot["shared"]:  # the fleet: every machine working on this queue
        lines.append(f"workers: {len(snapshot['workers'])} on {_where(snapshot['database'])}")
        lines += [_worker_line(w, now, snapshot["lease_seconds"]) for w in snapshot["workers"]]
    if snapshot["paused"]:
        lines.append("paused: no job starts until `watcherd resume` (work done is kept)")
    lines.append("queue: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for job in snapshot["running"]:
        line = f"running: #{job.id} {job.path} {job.progress:.0f}%"
        if job.audio_seconds:
            done = job.audio_seconds * job.progress / 100
            line += f", {_duration(done)} of {_duration(job.audio_seconds)} audio"
        rest = job.remaining_seconds(speed, now)
        lines.append(line + (f", ETA {_duration(rest)}" if rest is not None else ""))
    if outlook is not None and outlook.waiting:
        line = f"waiting: {_plural(outlook.waiting, 'file')}"
        if outlook.waiting > outlook.unknown_length:
            line += f", {_duration(outlook.waiting_audio_seconds)} of audio"
        if outlook.unknown_length:
            line += f" ({outlook.unknown_length} of unknown length)"
        eta = _queue_eta(snapshot)
        if eta is not None:
            recent = "job" if outlook.speed_jobs == 1 else f"{outlook.speed_jobs} jobs"
            line += (
                f"; all done in about {_duration(eta)} at {speed:.1f}x realtime (the last {recent})"
            )
        elif speed is None:
            line += "; ETA once a job has finished"
        lines.append(line)
    upcoming = snapshot["next"]
    if upcoming is not None:
        lines.append(f"next: #{upcoming.id} {upcoming.path}{_priority_note(upcoming.priority)}")
    if snapshot["jobs"]:
        lines += ["", _table(snapshot["jobs"])]
    return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _priority_note(priority: int) -> str:
    return f" (priority {priority:+d})" if priority else ""


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
    model = d.get("model")
    if d.get("model_loaded") is False:
        model = f"{model} unloaded while idle"
    return (
        f"daemon: running (pid {d.get('pid')}, up {uptime}, model {model}, "
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
        state = job.state
        if job.state == "running":
            state += f" {job.progress:.0f}%"
        elif job.state == "queued":
            state += _priority_note(job.priority)
        notes = [job.error or job.waits, f"hook: {job.hook_error}" if job.hook_error else None]
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


priority_option = click.option(
    "--priority",
    type=click.Choice(list(PRIORITIES)),
    default=None,
    help="Queue ahead of (high) or behind (low) other files. Default: the file's inbox's "
    "priority, else normal.",
)


@cli.command()
@config_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Queue again even if this content was transcribed.")
@priority_option
def add(config: Path | None, paths: tuple[Path, ...], force: bool, priority: str | None) -> None:
    """Queue files by hand (the daemon picks them up)."""
    from watcherd.store import content_hash
    from watcherd.watcher import audio_length

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
            level = PRIORITIES[priority or settings.priority_of(path)]
            job, created = store.enqueue(
                path,
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                sha256=digest,
                priority=level,
                audio_seconds=audio_length(path),
            )
            note = _priority_note(level)
            if created:
                click.echo(f"queued #{job.id} {path}{note}")
                continue
            if priority is not None and job.priority != level:
                job = store.set_priority(job.id, level)
            if force or job.state in ("failed", "cancelled", "skipped"):  # no transcript yet
                job = store.retry(job.id)
                click.echo(f"queued again #{job.id} {path}{note}")
            elif job.state == "queued" and priority is not None:
                click.echo(f"already queued #{job.id} {path}, now{note or ' at normal priority'}")
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
def pause(config: Path | None) -> None:
    """Start no more jobs; the running one stops at its next checkpoint, its work kept."""
    _set_paused(config, True)
    click.echo("paused: running work stops at its next checkpoint and waits; "
               "`watcherd resume` goes on (a restart stays paused)")  # fmt: skip


@cli.command()
@config_option
def resume(config: Path | None) -> None:
    """Go on after `watcherd pause`: jobs resume from their checkpoints."""
    _set_paused(config, False)
    click.echo("resumed")


def _set_paused(config: Path | None, paused: bool) -> None:
    settings = _settings(config)
    store = _open_store(settings)
    try:
        store.set_paused(paused)
    finally:
        store.close()


@cli.command()
@config_option
@click.argument("job_id", type=int)
def retry(config: Path | None, job_id: int) -> None:
    """Queue a failed, cancelled, skipped or done job again."""
    _change_job(config, job_id, "retry")


@cli.command()
@config_option
@click.argument("job_id", type=int)
def bump(config: Path | None, job_id: int) -> None:
    """Move a queued job to the front of the queue (ahead of every other queued job)."""
    settings = _settings(config)
    store = _open_store(settings)
    try:
        job = store.bump(job_id)
    except KeyError:
        click.echo(f"watcherd: no job #{job_id}", err=True)
        sys.exit(EX_FAILURE)
    finally:
        store.close()
    if job.state != "queued":
        hint = (
            " (retry it to queue it again)"
            if job.state in ("failed", "cancelled", "skipped", "done")
            else ""
        )
        click.echo(f"watcherd: #{job.id} is {job.state}, not queued{hint}", err=True)
        sys.exit(EX_FAILURE)
    click.echo(f"#{job.id} queued first{_priority_note(job.priority)} {job.path}")


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
    """Transcribe files now, without the daemon, loading the model once. On a terminal
    each file shows a progress bar (audio done, speed, ETA). The outputs are named and
    laid out as the daemon would; no hook runs and nothing is skipped."""
    from watcherd import log, outputs, progress
    from watcherd.diarize.background import Speakers
    from watcherd.engine import AudioError, ModelError
    from watcherd.engine.audio.decode import probe_seconds
    from watcherd.profiles import decode_options, engine_for, md_folder, placement, style

    settings = _settings(config)
    log.configure(settings.log_level if not as_json else "warning")
    if output_dir:
        output_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    speakers = Speakers(settings.model_cache_dir)
    with progress.FileBars(progress.wanted(as_json)) as bars:
        for path in paths:
            profile = settings.profile(path)  # a file inside an inbox gets that inbox's settings
            try:
                if not output_dir and (vault := md_folder(profile)):
                    outputs.check_writable(vault, create=True)
                engine = engine_for(settings, profile.model)
                engine.load()  # a model that cannot load is reported before any file
                report, finished = bars.track(path, probe_seconds(path))
                try:
                    with speakers.beside(path, profile) as diarizing:
                        transcript = engine.transcribe(path, decode_options(profile), report)
                        if diarizing:
                            transcript = diarizing.label(transcript)
                finally:
                    finished()
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
                bars.echo(f"watcherd: bad configuration: model: {exc}", err=True)
                sys.exit(EX_CONFIG)
            except (AudioError, OSError) as exc:
                bars.echo(f"watcherd: {exc}", err=True)
                failures += 1
                continue
            bars.echo(_transcribed(path, transcript, written, as_json))
    sys.exit(EX_FAILURE if failures else 0)


def _transcribed(path: Path, transcript, written: list[str], as_json: bool) -> str:
    if as_json:
        return json.dumps(
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
    return (
        f"{path}: {transcript.audio_seconds:.1f}s of audio in "
        f"{transcript.processing_seconds:.1f}s ({transcript.realtime_factor:.1f}x realtime) "
        f"-> {', '.join(written)}"
    )


@cli.command()
@config_option
def prepare(config: Path | None) -> None:
    """Convert and cache the configured models now (setup runs this once)."""
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
    if settings.diarizes:  # the one-time ONNX export, now rather than in the first job
        from watcherd.diarize.weights import onnx_models

        segmentation, embedding = onnx_models(settings.model_cache_dir)
        click.echo(f"diarization: {segmentation.parent}")


@cli.command()
@config_option
@click.option(
    "--manager", type=click.Choice(["launchd", "systemd"]), default=None,
    help="Service manager to check (default: launchd on macOS, systemd elsewhere).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="The findings as JSON, for scripts.")
def doctor(config: Path | None, manager: str | None, as_json: bool) -> None:
    """Check the configuration, the inboxes, disk space, the model, the BLAS and GPU, the
    service and the log, and say what to do about each problem. Exit 1 when something
    needs attention."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a check, never a download
    from watcherd import doctor as checks

    findings = checks.run(config, manager)
    if as_json:
        payload = {
            "ok": not any(f.needs_attention for f in findings),
            "findings": [f.as_dict() for f in findings],
        }
        click.echo(json.dumps(payload, ensure_ascii=False))
    else:
        click.echo(checks.render(findings))
    sys.exit(EX_FAILURE if any(f.needs_attention for f in findings) else 0)


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


NEEDS_MLX = {"run", "transcribe", "prepare", "doctor"}


def main() -> None:
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if command in NEEDS_MLX:
        from watcherd.blas import ensure_fast_blas

        ensure_fast_blas(sys.argv)
    cli(prog_name="watcherd")


if __name__ == "__main__":
    main()
