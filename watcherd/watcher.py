"""Notice complete media files in the inboxes and queue each one once.

A file is queued only when it is complete: its size and mtime have not changed for
`quiet_seconds`, it is not hidden, not a temp download name, not an iCloud placeholder,
and its extension is on the media list. Events (create, modify, close, move-in) only
nominate paths; a scan at start and every `scan_interval_seconds` nominates whatever the
events missed (the daemon was down, FSEvents dropped them, the inbox was re-created).
All the checking and hashing happens on the watcher's own thread, never in watchdog's.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from watcherd import faults, log
from watcherd.config import Settings
from watcherd.store import PRIORITIES, Store, content_hash

TEMP_SUFFIXES = (".part", ".crdownload", ".download", ".tmp", ".partial", ".opdownload")
TICK_SECONDS = 0.25
HEALTH_SECONDS = 2.0


NOT_UTF8 = "its name is not valid UTF-8, which the queue cannot store: rename it to transcribe it"


def rejection(path: Path, inbox: Path, extensions: Iterable[str]) -> str | None:
    """Why this path is not a candidate, or None when it is one."""
    try:
        relative = path.relative_to(inbox)
    except ValueError:
        return "outside the inbox"
    if any(part.startswith(".") for part in relative.parts):
        return "hidden"
    name = path.name.lower()
    if name.endswith(".icloud"):
        return "iCloud placeholder"
    if name.endswith(TEMP_SUFFIXES):
        return "temporary download name"
    if path.suffix[1:].lower() not in extensions:
        return "not a media extension"
    if not _is_utf8(path):  # Linux allows any bytes in a name; macOS only UTF-8
        return NOT_UTF8
    return None


def _is_utf8(path: Path) -> bool:
    try:
        str(path).encode("utf-8")  # undecodable bytes are surrogates here, and fail
    except UnicodeEncodeError:
        return False
    return True


def printable(path: Path) -> str:
    """A path for messages: undecodable bytes of its name shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def audio_length(path: Path) -> float | None:
    """The length the file's container declares, for the queue's ETA; None when it
    declares none or cannot be opened (transcribing it will say why)."""
    from watcherd.engine.audio.decode import AudioError, probe_seconds

    try:
        return probe_seconds(path)
    except (AudioError, OSError):
        return None


def is_dataless(st: os.stat_result) -> bool:
    """An iCloud 'dataless' file: it has a size but no blocks on disk yet."""
    return st.st_size > 0 and getattr(st, "st_blocks", 1) == 0


@dataclass
class _Pending:
    inbox: Path
    signature: tuple[int, int]
    since: float


class Settler:
    """Holds nominated paths until they have been quiet long enough, then hands them on."""

    def __init__(
        self,
        quiet_seconds: float,
        on_settled: Callable[[Path, Path, os.stat_result], None],
        retryable: tuple[type[Exception], ...] = (),
    ):
        self.quiet_seconds = quiet_seconds
        self.on_settled = on_settled
        self.retryable = retryable  # the queue is away (locked, a server restarting)
        self._pending: dict[Path, _Pending] = {}
        self._lock = threading.Lock()

    def nominate(self, path: Path, inbox: Path) -> None:
        with self._lock:
            if path not in self._pending:
                self._pending[path] = _Pending(inbox, (-1, -1), time.monotonic())

    def __len__(self) -> int:
        return len(self._pending)

    def tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            items = list(self._pending.items())
        for path, pending in items:
            try:
                st = path.stat()
            except OSError:  # gone (moved away, deleted) or a dangling link
                self._drop(path)
                continue
            signature = (st.st_size, st.st_mtime_ns)
            if signature != pending.signature or is_dataless(st):
                pending.signature, pending.since = signature, now
            elif now - pending.since >= self.quiet_seconds:
                self._drop(path)
                try:
                    self.on_settled(path, pending.inbox, st)
                except self.retryable as exc:  # one line per try: the outage is no bug
                    error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    log.get().warning("queue_waiting", path=str(path), error=error)
                    self.nominate(path, pending.inbox)
                except Exception:  # anything else is: its trace, and the file is tried again
                    log.get().exception("queue_failed", path=str(path))
                    self.nominate(path, pending.inbox)

    def _drop(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)


class _Nominator(FileSystemEventHandler):
    """watchdog handler: turns events into nominations and must never raise."""

    def __init__(self, watcher: Watcher, inbox: Path):
        self.watcher, self.inbox = watcher, inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.event_type in ("deleted", "opened", "closed_no_write"):
                return
            target = getattr(event, "dest_path", "") or event.src_path
            target = Path(os.fsdecode(target))
            if event.is_directory:
                if event.event_type in ("created", "moved"):
                    self.watcher.nominate_tree(target, self.inbox)
            else:
                self.watcher.nominate(target, self.inbox)
        except Exception:  # an exception here would kill watchdog's dispatch thread
            log.get().exception("watch_event_failed", src=str(event.src_path))


class Watcher:
    """Watches the inboxes with watchdog plus periodic scans, and queues settled files."""

    def __init__(
        self, settings: Settings, store: Store, on_queued: Callable[[], None] = lambda: None
    ):
        self.settings = settings
        self.store = store
        self.on_queued = on_queued
        self.extensions = set(settings.media_extensions)
        self.inboxes = [Path(os.path.realpath(p)) for p in settings.inbox_paths]
        self.settler = Settler(settings.quiet_seconds, self._settled, store.errors)
        self.log = log.get()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer = None
        self._identities: dict[Path, tuple[int, int] | None] = {}
        self._scan_requested = threading.Event()
        self._unqueueable: set[Path] = set()  # reported already
        self._unlistable: set[Path] = set()  # inboxes that cannot be listed, reported

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        for inbox in self.inboxes:
            inbox.mkdir(parents=True, exist_ok=True)
        self._restart_observer()
        self._scan_requested.set()
        self._thread = threading.Thread(target=self._loop, name="watcherd-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        self._stop_observer()

    # --- nominations -----------------------------------------------------------------

    def nominate(self, path: Path, inbox: Path) -> None:
        if self._candidate(path, inbox):
            self.settler.nominate(path, inbox)

    def _candidate(self, path: Path, inbox: Path) -> bool:
        """Whether to consider this path; a media file that cannot be queued is reported
        once (in the log: it never reaches the queue that `status` shows)."""
        reason = rejection(path, inbox, self.extensions)
        if reason == NOT_UTF8 and path not in self._unqueueable:
            self._unqueueable.add(path)
            self.log.error("cannot_queue", path=printable(path), reason=reason)
        return reason is None

    def nominate_tree(self, folder: Path, inbox: Path) -> None:
        for path in self._walk(folder, inbox):
            self.nominate(path, inbox)

    def scan(self) -> int:
        """Nominate every candidate file the store does not know yet; returns how many."""
        count = 0
        for inbox in self.inboxes:
            for path in self._walk(inbox, inbox):
                if not self._candidate(path, inbox):
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                if not self.store.is_known(path, st.st_size, st.st_mtime_ns):
                    self.settler.nominate(path, inbox)
                    count += 1
        return count

    def _walk(self, folder: Path, inbox: Path) -> Iterator[Path]:
        recursive = self.settings.recursive
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            if folder == inbox:
                self._unlisted(inbox, exc)
            return
        if folder == inbox and inbox in self._unlistable:
            self._unlistable.discard(inbox)
            self.log.info("inbox_readable", inbox=str(inbox))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_file():
                    yield Path(entry.path)
                elif recursive and entry.is_dir(follow_symlinks=False):
                    yield from self._walk(Path(entry.path), inbox)
            except OSError:
                continue

    def _unlisted(self, inbox: Path, exc: OSError) -> None:
        """An inbox this process may not list: said once (until it can again), because
        nothing in it will ever be queued. On macOS this is the privacy protection of
        ~/Documents and the like (`watcherd doctor` explains it)."""
        if inbox not in self._unlistable and inbox.exists():
            self._unlistable.add(inbox)
            self.log.error("inbox_unreadable", inbox=str(inbox), error=exc.strerror,
                           errno=exc.errno)  # fmt: skip

    def _settled(self, path: Path, inbox: Path, st: os.stat_result) -> None:
        if self.store.is_known(path, st.st_size, st.st_mtime_ns):
            return
        try:
            digest = content_hash(path)
        except OSError as exc:
            # Unreadable (permissions): queue it anyway, so it fails visibly with its cause.
            self.log.warning("hash_failed", path=str(path), error=exc.strerror)
            digest = f"unhashed:{st.st_size}:{st.st_mtime_ns}"
        try:
            after = path.stat()
        except OSError:
            return
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            self.settler.nominate(path, inbox)  # changed while hashing: not complete yet
            return
        seconds = audio_length(path)
        faults.checkpoint("watch.enqueue")
        job, created = self.store.enqueue(
            path,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            sha256=digest,
            inbox=str(inbox),
            priority=PRIORITIES[self.settings.priority_of(path)],
            audio_seconds=seconds,
        )
        if created:
            self.log.info("queued", job_id=job.id, path=str(path), size=st.st_size)
            self.on_queued()

    # --- the loop --------------------------------------------------------------------

    def _loop(self) -> None:
        next_scan = next_health = 0.0
        while not self._stop.wait(TICK_SECONDS):
            now = time.monotonic()
            try:
                if now >= next_health:
                    next_health = now + HEALTH_SECONDS
                    self._check_health()
                if self._scan_requested.is_set() or now >= next_scan:
                    self._scan_requested.clear()
                    next_scan = now + self.settings.scan_interval_seconds
                    found = self.scan()
                    if found:
                        self.log.info("scan_found", files=found)
                self.settler.tick()
            except Exception:  # keep watching whatever one file or scan did
                self.log.exception("watcher_error")

    def _identity(self, inbox: Path) -> tuple[int, int] | None:
        try:
            st = inbox.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _check_health(self) -> None:
        """Re-watch when an inbox was deleted and re-created, or the observer died."""
        identities = {inbox: self._identity(inbox) for inbox in self.inboxes}
        changed = identities != self._identities
        dead = self._observer is None or not self._observer.is_alive()
        if changed or dead:
            if changed:
                gone = [str(i) for i, ident in identities.items() if ident is None]
                if gone:
                    self.log.warning("inbox_missing", inboxes=gone)
            self._restart_observer()
            self._scan_requested.set()

    def _restart_observer(self) -> None:
        self._stop_observer()
        observer = Observer()
        for inbox in self.inboxes:
            if inbox.is_dir():
                observer.schedule(
                    _Nominator(self, inbox), str(inbox), recursive=self.settings.recursive
                )
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._identities = {inbox: self._identity(inbox) for inbox in self.inboxes}
        self.log.info(
            "watching",
            inboxes=[str(i) for i in self.inboxes if i.is_dir()],
            recursive=self.settings.recursive,
        )

    def _stop_observer(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            with contextlib.suppress(RuntimeError):
                self._observer.join(5)
            self._observer = None
