"""Crash points for the fault-injection tests: kill -9 at an exact step of the work.

Random kills rarely land in the few milliseconds between two renames, so the reliability
suite also names the step. With `_WATCHERD_CRASH_AT=outputs.rename:2` the daemon sends
itself SIGKILL the second time it reaches `checkpoint("outputs.rename")`: a real kill -9,
with no chance to clean up. Unset (always, outside the tests) a checkpoint does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "_WATCHERD_CRASH_AT"  # leading underscore: not a setting, config ignores it

_target = os.environ.get(ENV, "")
_name, _, _count = _target.partition(":")
_remaining = int(_count or 1) if _name else 0


def checkpoint(name: str) -> None:
    global _remaining
    if name != _name or _remaining <= 0:
        return
    _remaining -= 1
    if _remaining == 0:
        os.kill(os.getpid(), signal.SIGKILL)
