"""Where watcherd keeps things, and the few settings `watcherd status` needs.

`status` must answer at once, like `git status`, and most of its time went into starting
the interpreter and importing pydantic to validate settings it never uses. So the queue's
location is read here with `tomllib` alone, by the same rules as `config.Settings` (the
environment over the file over the defaults below, which `Settings` uses too); a test
holds the two readers equal. Everything else is validated by `config.load_settings`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

APP = "watcherd"
ENV_PREFIX = "WATCHERD_"
BUSY_TIMEOUT_SECONDS = 30.0
LEASE_SECONDS = 60.0  # a claimed job's lease, renewed by its worker's heartbeat


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the key, value and source."""


def expand(path: Path | str) -> Path:
    return Path(os.path.expanduser(path)).absolute()


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / APP / "config.toml"


def config_path(explicit: Path | str | None = None) -> Path:
    """--config, else $WATCHERD_CONFIG, else the per-user default."""
    chosen = explicit or os.environ.get(f"{ENV_PREFIX}CONFIG")
    return Path(chosen).expanduser() if chosen else default_config_path()


def is_postgres(database: Path | str) -> bool:
    """Whether the `database` setting names a PostgreSQL server rather than a SQLite file."""
    return isinstance(database, str) and database.startswith(("postgresql://", "postgres://"))


def database_setting(value: Path | str) -> Path | str:
    """A `database` value as used: a postgresql:// URL as it is (a password in it is
    refused: it belongs in PGPASSWORD or ~/.pgpass, not in a config file), else a path."""
    if not is_postgres(str(value)):
        return expand(value)
    from urllib.parse import urlsplit

    if urlsplit(str(value)).password is not None:
        raise ValueError(
            "a password in the URL: give it in PGPASSWORD or ~/.pgpass instead (README, "
            '"Several machines, one queue")'
        )
    return str(value)


def redact(database: str) -> str:
    """A database URL fit for a message: a password in it is not repeated."""
    if not is_postgres(database) or "@" not in database:
        return database
    scheme, rest = database.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def default_database() -> Path:
    return Path(platformdirs.user_data_dir(APP, appauthor=False)) / "jobs.db"


def default_log_dir() -> Path:
    return Path(platformdirs.user_log_dir(APP, appauthor=False))


def default_model_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP, appauthor=False)) / "models"


def read_file(explicit: Path | str | None = None) -> tuple[Path, dict]:
    """The settings file and its values: empty when the default file does not exist, an
    error when a file named by --config or $WATCHERD_CONFIG does not."""
    file = config_path(explicit)
    named = explicit is not None or f"{ENV_PREFIX}CONFIG" in os.environ
    try:
        return file, tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if named:
            raise ConfigError(f"{file}: config file not found") from None
        return file, {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from exc


@dataclass(frozen=True)
class Queue:
    """Where the job queue is, and how long to wait for its lock."""

    database: Path | str  # a SQLite file, or a postgresql:// URL
    busy_timeout_seconds: float
    worker_name: str = ""
    inboxes: dict[str, Path] = field(default_factory=dict)  # by name: a shared queue's
    lease_seconds: float = LEASE_SECONDS  # a worker silent for longer may be gone

    @property
    def lock(self) -> Path:
        """The daemon's single-instance lock: beside a SQLite file; for a server that
        several machines share, one per worker name in this user's data folder."""
        if is_postgres(self.database):
            return default_database().with_name(f"{self.worker_name}.postgres.lock")
        return self.database.with_name(self.database.name + ".lock")


def queue(explicit: Path | str | None = None) -> Queue:
    """The queue's settings, read as `config.load_settings` reads them."""
    file, values = read_file(explicit)

    def pick(key: str, default):
        variable = f"{ENV_PREFIX}{key.upper()}"
        if variable in os.environ:
            return os.environ[variable], f"environment variable {variable}"
        return values.get(key, default), str(file)

    database, source = pick("database", default_database())
    if not isinstance(database, (str, Path)) or not str(database):
        raise ConfigError(f"{source}: invalid value {database!r} for 'database': not a path")
    try:
        database = database_setting(database)
    except ValueError as exc:
        raise ConfigError(f"{source}: invalid value for 'database': {exc}") from None
    worker, source = pick("worker_name", None)
    if worker is not None and (not isinstance(worker, str) or not worker):
        raise ConfigError(f"{source}: invalid value {worker!r} for 'worker_name': a name")
    timeout, source = pick("busy_timeout_seconds", BUSY_TIMEOUT_SECONDS)
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        seconds = 0.0
    if isinstance(timeout, bool) or not seconds > 0:
        raise ConfigError(
            f"{source}: invalid value {timeout!r} for 'busy_timeout_seconds': "
            "a number of seconds above 0"
        )
    lease, source = pick("lease_seconds", LEASE_SECONDS)
    try:
        lease_seconds = float(lease)
    except (TypeError, ValueError):
        lease_seconds = 0.0
    if isinstance(lease, bool) or not lease_seconds > 0:
        raise ConfigError(
            f"{source}: invalid value {lease!r} for 'lease_seconds': a number of seconds above 0"
        )
    inboxes: dict[str, Path] = {}
    if is_postgres(database):  # its jobs' paths are read through this machine's inboxes
        listed, _ = pick("inboxes", [])
        if isinstance(listed, str):
            try:
                listed = json.loads(listed)
            except ValueError:
                listed = []
        for inbox in listed if isinstance(listed, list) else []:
            entry = inbox if isinstance(inbox, dict) else {"path": inbox}
            if isinstance(entry.get("path"), str):
                path = expand(entry["path"])
                inboxes[entry.get("name") or folder_name(path)] = path
    return Queue(database, seconds, worker or default_worker_name(), inboxes, lease_seconds)


def folder_name(path: Path) -> str:
    """An inbox's default name: its folder's, in the characters a name may have."""
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in path.name).strip("-.")
    return name or "inbox"


def default_worker_name() -> str:
    """This machine's name in a queue several machines share: its host name."""
    import socket

    return socket.gethostname()
