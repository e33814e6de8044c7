"""One daemon per database: an exclusive flock beside it, holding the daemon's details.

`watcherd status` reads it to say whether (and which) daemon runs, so this module stays
light: no MLX, no Whisper, no logging setup.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path


class AlreadyRunning(RuntimeError):
    def __init__(self, pid: int | None, lock_path: Path):
        super().__init__(
            f"watcherd is already running (pid {pid or 'unknown'}) on this database; "
            f"lock: {lock_path}"
        )
        self.pid = pid


class InstanceLock:
    """An exclusive flock beside the database. The kernel drops it when the process dies,
    even by kill -9, so a stale lock never blocks the next start."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, info: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(read_lock_info(self.path).get("pid"), self.path) from None
        self._fd = fd
        self.update(info)

    def update(self, info: dict) -> None:
        """Replace the details `status` reads (the daemon's phase changes once it is up)."""
        data = json.dumps(info).encode()
        os.pwrite(self._fd, data, 0)  # over the old text, then cut: never an empty file
        os.ftruncate(self._fd, len(data))
        os.fsync(self._fd)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def read_lock_info(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def running_daemon(path: Path) -> dict | None:
    """The info (pid, start time, model, ...) of the daemon holding the lock at `path`, or
    None if none runs."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_lock_info(path) or {"pid": None}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
