"""`watcherd transcribe`'s progress bars, one per file, drawn by rich on a terminal.

The engine reports the fraction of the file done once per batch of windows, seconds
apart on a long file; rich redraws on its own clock in between, so the elapsed time, the
speed and the ETA move while the bar waits for the next report.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
from rich.text import Text


def minutes(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _pace(task: Task) -> float | None:
    """Audio seconds per second so far: × realtime, file opening and VAD included."""
    elapsed = task.elapsed
    return task.completed / elapsed if task.completed and elapsed else None


class AudioColumn(ProgressColumn):
    """Audio done of the file's length: `1:12 / 9:24 audio`."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("length unknown", style="progress.download")
        return Text(f"{minutes(task.completed)} / {minutes(task.total)} audio",
                    style="progress.download")  # fmt: skip


class SpeedColumn(ProgressColumn):
    """How fast this file goes, in × realtime."""

    def render(self, task: Task) -> Text:
        pace = _pace(task)
        return Text(f"{pace:.1f}x realtime" if pace else "", style="progress.data.speed")


class EtaColumn(ProgressColumn):
    """The time left at this file's pace so far."""

    def render(self, task: Task) -> Text:
        pace = _pace(task)
        if pace is None or task.total is None:
            return Text(f"elapsed {minutes(task.elapsed or 0)}", style="progress.elapsed")
        left = (task.total - task.completed) / pace
        return Text(f"ETA {minutes(left)}", style="progress.remaining")


def wanted(as_json: bool) -> bool:
    """Bars only for a person at a terminal: never in JSON mode or when output is piped."""
    return not as_json and sys.stdout.isatty() and sys.stderr.isatty()


class FileBars:
    """One bar per file while it is transcribed; a finished file's bar goes, its result
    line stays. Lines go through `echo`, which prints them above the bars."""

    def __init__(self, enabled: bool):
        self.progress = None
        if enabled:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}", style="bold"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                AudioColumn(),
                SpeedColumn(),
                EtaColumn(),
                console=Console(highlight=False),
                transient=True,
            )

    def __enter__(self) -> FileBars:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def echo(self, line: str, err: bool = False) -> None:
        """Print a line: above the bars while they show (both streams are then the same
        terminal), else with click to stdout or stderr."""
        if self.progress is None:
            click.echo(line, err=err)
        else:
            self.progress.console.print(Text(line), soft_wrap=True)

    def track(self, path: Path, seconds: float | None) -> tuple[Callable[[float], None], Callable]:
        """A progress callback for the engine (fraction done), and the call that ends the
        file's bar."""
        if self.progress is None:
            return (lambda fraction: None), (lambda: None)
        progress = self.progress
        task = progress.add_task(path.name, total=seconds or None)

        def report(fraction: float) -> None:
            if seconds:
                progress.update(task, completed=fraction * seconds)

        return report, lambda: progress.remove_task(task)
