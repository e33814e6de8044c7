"""Crash points for the fault-injection tests: kill -9 at an exact step of the work.

Random kills rarely land in the few milliseconds between two renames, so the reliability
suite also names the step. With `_WATCHERD_CRASH_AT=outputs.rename:2` the daemon sends
itself SIGKILL the second time it reaches `checkpoint("outputs.rename")`: a real kill -9,
with no chance to clean up. With `_WATCHERD_CRASH_AT=decode=talk.wav#2` it does so every
time it reaches `checkpoint("decode", "talk.wav#2")`: a file that kills the daemon at the
same place each time, as a poison file would. Unset (always, outside the tests) a
checkpoint does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "_WATCHERD_CRASH_AT"  # leading underscore: not a setting, config ignores it

_target = os.environ.get(ENV, "")
_name, _, _key = _target.partition("=")
if not _key:
    _name, _, _count = _target.partition(":")
    _remaining = int(_count or 1) if _name else 0


def checkpoint(name: str, key: str | None = None) -> None:
    global _remaining
    if name != _name:
        return
    if _key:
        if key == _key:
            os.kill(os.getpid(), signal.SIGKILL)
        return
    if _remaining <= 0:
        return
    _remaining -= 1
    if _remaining == 0:
        os.kill(os.getpid(), signal.SIGKILL)
