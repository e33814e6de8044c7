"""mlx-whisper's modules without its package `__init__`, until something needs it.

`mlx_whisper/__init__.py` imports its `transcribe`, and through it numba and scipy: over
a hundred MB of resident memory that watcherd never uses. Here the package is registered
without running its `__init__`, so `mlx_whisper.audio`, `.whisper`, `.tokenizer`... load
alone. `complete()`, or the first lookup of a name the `__init__` defines (such as
`mlx_whisper.transcribe`, as the benchmark's stock engine does), runs it then.
"""

from __future__ import annotations

import importlib.util
import sys

PACKAGE = "mlx_whisper"


def defer() -> None:
    """Register the package uninitialised, unless it is imported already."""
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None:
        return  # not installed: let the real import fail where it is used
    package = importlib.util.module_from_spec(spec)

    def lookup(name: str) -> object:
        complete()
        return getattr(package, name)

    package.__getattr__ = lookup
    sys.modules[PACKAGE] = package


def complete() -> None:
    """Run the package's real `__init__` if `defer` skipped it."""
    package = sys.modules.get(PACKAGE)
    if package is not None and "__getattr__" in vars(package):
        del package.__getattr__  # once: the real __init__ defines the rest
        package.__spec__.loader.exec_module(package)
