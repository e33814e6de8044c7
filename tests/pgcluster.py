"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, `initdb` and
`pg_ctl` in a temporary folder, listening only on a unix socket in that folder.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster runs as
`nobody`, in a folder that user owns. Each test gets its own database, a copy of
template1 (a fast file copy).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "postgres"


def server_binaries() -> Path | None:
    """The newest installed server's bin folder (Debian keeps one per major version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))  # fmt: skip
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")  # elsewhere (Homebrew): on PATH
    return Path(initdb).parent if initdb else None


class Cluster:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        # Short: a unix socket's path is limited to about 100 characters.
        self.folder = Path(tempfile.mkdtemp(prefix="wd-pg-"))
        self.data = self.folder / "data"
        self.user = "nobody" if os.geteuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self.log = self.folder / "server.log"
        self._names = itertools.count()

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self.user,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
            env={**os.environ, "LC_ALL": "C"},
        )

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                  "--no-sync", "-E", "UTF8")  # fmt: skip
        self._pg_ctl("start")

    def _pg_ctl(self, action: str) -> None:
        # Durability is not under test (a restart below is a clean one): no fsync, for speed.
        options = (
            f"-k {self.folder} -c listen_addresses='' -c fsync=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        args = ["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-m", "fast"]
        self._run(*args, *(["-o", options] if action != "stop" else []), action)

    def restart(self) -> None:
        """Stop the server (every connection is cut) and start it again."""
        self._pg_ctl("restart")

    def stop(self) -> None:
        if self.data.exists():
            self._pg_ctl("stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{quote(str(self.folder), safe='')}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template1')
        return self.url(name)
