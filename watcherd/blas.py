"""Make MLX's CPU backend use a real BLAS on Linux.

The `mlx[cpu]` wheel bundles the reference (netlib) BLAS, tens of times slower than
OpenBLAS (README: "MLX on a Linux CPU needs a real BLAS"). MLX resolves `cblas_sgemm` at
load time, so the only way in is LD_PRELOAD before the process starts: watcherd re-executes
itself once with OpenBLAS preloaded when setup has installed it, and says so loudly when not.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

_MARKER = "_WATCHERD_BLAS_REEXEC"
_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
WARNING = (
    "watcherd: WARNING: MLX is using its bundled reference BLAS, which is much slower. "
    "Install OpenBLAS (Debian/Ubuntu: apt-get install libopenblas0-pthread) and restart."
)


def find_openblas() -> str | None:
    for candidate in _CANDIDATES:
        if Path(candidate).exists():
            return candidate
    found = ctypes.util.find_library("openblas")
    return found if found and Path(found).is_absolute() else None


def preloaded() -> str | None:
    """The OpenBLAS library in LD_PRELOAD, if any."""
    return next((p for p in os.environ.get("LD_PRELOAD", "").split(":") if "openblas" in p), None)


def in_use() -> str:
    """A short description of the BLAS MLX uses in this process."""
    if sys.platform == "darwin":
        return "Accelerate"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    for line in maps.splitlines():
        if "libopenblas" in line:
            return f"OpenBLAS ({line.split()[-1]})"
    return "reference BLAS (slow)"


def ensure_fast_blas(argv: list[str]) -> None:
    """On Linux, re-execute this process once with OpenBLAS preloaded; warn if impossible."""
    if sys.platform != "linux" or preloaded():
        return
    library = find_openblas()
    if library is None or os.environ.get(_MARKER):
        print(WARNING, file=sys.stderr)
        return
    env = dict(os.environ)
    env[_MARKER] = "1"
    env["LD_PRELOAD"] = ":".join(filter(None, [library, os.environ.get("LD_PRELOAD")]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "watcherd", *argv[1:]], env)
