"""macOS privacy protection (TCC) of the places people put an inbox.

A LaunchAgent may not read ~/Desktop, ~/Documents, ~/Downloads, iCloud Drive, cloud
storage folders or other volumes until the user allows its program, which for watcherd is
the Python interpreter the agent runs. The kernel then answers "Operation not permitted"
(EPERM), where missing Unix permissions answer "Permission denied" (EACCES). Permission is
granted to the program itself: a folder your terminal can read may still be closed to the
agent.
"""

from __future__ import annotations

import os
from pathlib import Path

SETTINGS_PATH = "System Settings → Privacy & Security"


def protected_location(path: Path, home: Path) -> str | None:
    """The name of the protected place that holds `path`, or None."""
    places = [
        (home / "Desktop", "your Desktop"),
        (home / "Documents", "your Documents folder"),
        (home / "Downloads", "your Downloads folder"),
        (home / "Library" / "Mobile Documents", "iCloud Drive"),
        (home / "Library" / "CloudStorage", "a cloud storage folder (Dropbox, OneDrive, ...)"),
        (Path("/Volumes"), "a removable or network volume"),
    ]
    for folder, name in places:
        if path == folder or folder in path.parents:
            return name
    return None


def how_to_allow(location: str, python: str) -> str:
    """Plain steps to let the LaunchAgent's interpreter into `location`."""
    real = os.path.realpath(python)
    program = real if real == python else f"{real} (what {python} points to)"
    return (
        f"macOS keeps {location} private: the LaunchAgent may not read it until you allow "
        f"its program, the Python interpreter {program}. Open {SETTINGS_PATH} → Full Disk "
        f"Access, click +, press Cmd-Shift-G, enter {real}, switch it on, then run "
        f"`watcherd service restart`. (Files and Folders in the same pane lists the "
        "interpreter once it has asked; Full Disk Access works at once.) Or move the "
        "inbox outside the protected folders, e.g. ~/Transcribe/inbox."
    )
