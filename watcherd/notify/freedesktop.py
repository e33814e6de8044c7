"""Linux: the freedesktop notification service (GNOME, KDE, dunst, mako…) on the D-Bus
session bus, through `notify-send` (Debian and Ubuntu: `libnotify-bin`).

A systemd user unit usually has `DBUS_SESSION_BUS_ADDRESS` in its environment; where it
does not, the bus is found at its standard place, `$XDG_RUNTIME_DIR/bus`. Without either
there is no desktop session to show notifications in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping

from watcherd.notify import POST_TIMEOUT_SECONDS, Notifier, NotifyError

BUS_VARIABLE = "DBUS_SESSION_BUS_ADDRESS"


def session_bus(environ: Mapping[str, str]) -> str | None:
    """The session bus's address: from the environment, or its standard socket."""
    if environ.get(BUS_VARIABLE):
        return environ[BUS_VARIABLE]
    runtime = environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    socket = os.path.join(runtime, "bus")
    return f"unix:path={socket}" if os.path.exists(socket) else None


def markup_escape(text: str) -> str:
    """The body may hold markup (`<b>`, `&amp;`) where the service supports it: text is text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class NotifySend(Notifier):
    name = "notify-send"

    def __init__(self, environ: Mapping[str, str] | None = None):
        self.environ = dict(os.environ if environ is None else environ)
        self.bus = session_bus(self.environ)

    def unavailable(self) -> str | None:
        if not shutil.which("notify-send", path=self.environ.get("PATH")):
            return "notify-send is not on PATH (Debian and Ubuntu: apt install libnotify-bin)"
        if self.bus is None:
            return (
                f"no D-Bus session bus: {BUS_VARIABLE} is unset and there is no "
                "$XDG_RUNTIME_DIR/bus (no desktop session)"
            )
        return None

    def post(self, title: str, body: str, *, failed: bool) -> None:
        category = "transfer.error" if failed else "transfer.complete"
        argv = ["notify-send", "--app-name=watcherd", f"--category={category}", "--",
                title, markup_escape(body)]  # fmt: skip
        env = self.environ | {BUS_VARIABLE: self.bus or ""}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env,
                                  timeout=POST_TIMEOUT_SECONDS, check=False)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NotifyError(f"notify-send: {exc}") from None
        if done.returncode != 0:
            raise NotifyError(f"notify-send exited {done.returncode}: {done.stderr.strip()}")
