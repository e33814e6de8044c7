"""macOS: `osascript`'s `display notification`.

A LaunchAgent runs in the user's GUI (Aqua) session, so the banners it posts show like any
app's; macOS lists them under Script Editor in System Settings → Notifications, where
they can be allowed or silenced. The title and text reach the script as arguments of its
`run` handler, never inside its source: a file name with quotes cannot change the script.
"""

from __future__ import annotations

import shutil
import subprocess

from watcherd.notify import POST_TIMEOUT_SECONDS, Notifier, NotifyError

SCRIPT = (
    "on run argv",
    "display notification (item 2 of argv) with title (item 1 of argv)",
    "end run",
)


class Osascript(Notifier):
    name = "osascript"

    def unavailable(self) -> str | None:
        return None if shutil.which("osascript") else "osascript is not on PATH"

    def post(self, title: str, body: str, *, failed: bool) -> None:
        lines = [arg for line in SCRIPT for arg in ("-e", line)]
        try:
            done = subprocess.run(
                ["osascript", *lines, title, body],
                capture_output=True,
                text=True,
                timeout=POST_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NotifyError(f"osascript: {exc}") from None
        if done.returncode != 0:
            raise NotifyError(f"osascript exited {done.returncode}: {done.stderr.strip()}")
