"""Desktop notifications when a job ends done or failed (`notify = true`): the file's name,
its length, and its first words or the error.

One small class per platform behind `Notifier`, chosen once (`for_platform`):

- macOS (`macos.py`): `osascript`'s `display notification`, which works from a
  LaunchAgent because the agent runs in the user's GUI session;
- Linux (`freedesktop.py`): the freedesktop notification service on the D-Bus session
  bus, through `notify-send`.

Where a notifier cannot work (no `notify-send`, no session bus) it says why once in the
log and watcherd carries on without notifications.

A flood is summarised, not shown as 300 banners: a job that ends when no banner was shown
for `WINDOW_SECONDS` is shown at once; the jobs that end in the window after a banner are
held and shown together at its end ("12 files done, 1 failed"). Banners are posted from a
thread of their own: a slow notification service never holds up the queue.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from watcherd import log

if TYPE_CHECKING:
    from watcherd.config import Settings

WINDOW_SECONDS = 30.0
FIRST_WORDS_CHARS = 120  # of the transcript, in a banner
NAMES_SHOWN = 3  # in a summary: "a.m4a, b.m4a, c.m4a and 9 more"
POST_TIMEOUT_SECONDS = 10.0


class NotifyError(Exception):
    """A notification could not be shown; the message says why."""


class Notifier:
    """Shows one notification. Each platform's is a small class of its own."""

    name = ""

    def unavailable(self) -> str | None:
        """Why notifications cannot be shown here, or None when they can."""
        raise NotImplementedError

    def post(self, title: str, body: str, *, failed: bool) -> None:
        """Show a notification; raise NotifyError when it could not be shown."""
        raise NotImplementedError


def for_platform(platform: str = sys.platform) -> Notifier:
    if platform == "darwin":
        from watcherd.notify.macos import Osascript

        return Osascript()
    from watcherd.notify.freedesktop import NotifySend

    return NotifySend()


@dataclass(frozen=True)
class Ending:
    """A job's end, as a notification tells it."""

    source: str
    state: str  # "done" or "failed"
    detail: str  # the transcript's text, or the error
    audio_seconds: float | None = None


def banner(endings: list[Ending]) -> tuple[str, str, bool]:
    """Title, body, and whether it reports a failure: one job's own banner, or a summary."""
    if len(endings) == 1:
        end = endings[0]
        name = os.path.basename(end.source)
        if end.state == "failed":
            cause = end.detail.removeprefix(f"{end.source}: ")
            return f"{name} failed", cause, True
        words = _first_words(end.detail) or "no speech found"
        length = _length(end.audio_seconds)
        return f"{name} transcribed", f"{length} · {words}" if length else words, False
    done = [os.path.basename(e.source) for e in endings if e.state != "failed"]
    failed = [os.path.basename(e.source) for e in endings if e.state == "failed"]
    counts = []
    if done:
        counts.append(f"{len(done)} {'file' if len(done) == 1 else 'files'} done")
    if failed:
        counts.append(f"{len(failed)} failed")
    parts = [_names(done)] if done else []
    if failed:
        parts.append(f"failed: {_names(failed)}")
    return ", ".join(counts), "; ".join(parts), bool(failed)


def _first_words(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= FIRST_WORDS_CHARS:
        return text
    cut = text[:FIRST_WORDS_CHARS].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


def _length(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    more = len(names) - NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


class Notifications:
    """Posts the jobs' endings through a notifier, summarising floods, on its own thread."""

    _FLUSH = object()

    def __init__(self, notifier: Notifier, window: float = WINDOW_SECONDS):
        self.notifier = notifier
        self.window = window
        self.log = log.get()
        self._queue: queue.Queue = queue.Queue()
        self._failing = False  # the last post failed: its cause is in the log already
        self._thread = threading.Thread(target=self._loop, name="watcherd-notify", daemon=True)
        self._thread.start()

    def ended(self, ending: Ending) -> None:
        self._queue.put(ending)

    def close(self, timeout: float = POST_TIMEOUT_SECONDS) -> None:
        """Post what is held, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        last_post = -float("inf")
        held: list[Ending] = []
        while True:
            wait = max(0.0, last_post + self.window - time.monotonic()) if held else None
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = self._FLUSH
            if item is None or item is self._FLUSH:
                if held:
                    self._post(held)
                    last_post, held = time.monotonic(), []
                if item is None:
                    return
            elif held or time.monotonic() - last_post < self.window:
                held.append(item)
            else:
                self._post([item])
                last_post = time.monotonic()

    def _post(self, endings: list[Ending]) -> None:
        title, body, failed = banner(endings)
        try:
            self.notifier.post(title, body, failed=failed)
        except NotifyError as exc:
            if not self._failing:  # once, not once per banner
                self.log.warning("notification_failed", notifier=self.notifier.name, error=str(exc))
            self._failing = True
            return
        self._failing = False
        self.log.debug("notified", title=title, jobs=len(endings))


class Silent:
    """No notifications: none asked for, or none possible here."""

    def ended(self, ending: Ending) -> None:
        pass

    def close(self, timeout: float = 0) -> None:
        pass


def start(settings: Settings) -> Notifications | Silent:
    """Notifications for the daemon, when any inbox asks for them and the platform has a way."""
    if not settings.notifies:
        return Silent()
    notifier = for_platform()
    reason = notifier.unavailable()
    if reason:
        log.get().warning("notifications_unavailable", notifier=notifier.name, reason=reason)
        return Silent()
    return Notifications(notifier)
