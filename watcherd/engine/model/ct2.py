"""Read a CTranslate2 Whisper model (faster-whisper format) and map it to mlx-whisper weights.

The CTranslate2 `model.bin` layout (binary version 6 and earlier) is: a version, the spec
name, a revision, then variables as (name, rank, shape, dtype id, byte count, bytes), then
aliases. Attention projections are fused (q|k|v in self-attention, k|v in cross-attention),
so they are split here into mlx-whisper's separate query/key/value layers.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np

# CTranslate2's DataType enum, in order.
_DTYPES = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
    5: "bfloat16",
}


class ModelFormatError(ValueError):
    """The files are not a CTranslate2 Whisper model we can read."""


def _read_string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<H", f.read(2))
    return f.read(length)[:-1].decode("utf-8")


def _bfloat16_to_float32(raw: bytes) -> np.ndarray:
    halves = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32)
    return (halves << 16).view(np.float32)


def read_variables(parts: Iterable[Path]) -> dict[str, np.ndarray]:
    """Read every variable of a model.bin, which may be split into consecutive parts."""
    with _ConcatenatedFile([Path(p) for p in parts]) as f:
        (version,) = struct.unpack("<I", f.read(4))
        if not 1 <= version <= 6:
            raise ModelFormatError(f"unsupported CTranslate2 binary version {version}")
        spec = _read_string(f) if version >= 2 else ""
        if spec and spec != "WhisperSpec":
            raise ModelFormatError(f"not a Whisper model (spec {spec!r})")
        if version >= 2:
            f.read(4)  # spec revision
        (count,) = struct.unpack("<I", f.read(4))
        variables: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = _read_string(f)
            (rank,) = struct.unpack("<B", f.read(1))
            shape = struct.unpack(f"<{rank}I", f.read(4 * rank))
            (dtype_id,) = struct.unpack("<B", f.read(1))
            (nbytes,) = struct.unpack("<I", f.read(4))
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise ModelFormatError(f"model.bin is truncated inside variable {name!r}")
            dtype = _DTYPES.get(dtype_id)
            if dtype is None:
                raise ModelFormatError(f"variable {name!r} has unknown dtype id {dtype_id}")
            array = _bfloat16_to_float32(raw) if dtype == "bfloat16" else np.frombuffer(raw, dtype)
            variables[name] = array.reshape(shape)
        if version >= 3:
            (aliases,) = struct.unpack("<I", f.read(4))
            for _ in range(aliases):
                alias, target = _read_string(f), _read_string(f)
                variables[alias] = variables[target]
    return variables


class _ConcatenatedFile:
    """A read-only file object over several files laid end to end (split model.bin)."""

    def __init__(self, paths: list[Path]):
        self._files = [p.open("rb") for p in paths]
        self._index = 0

    def read(self, n: int) -> bytes:
        chunks = []
        while n > 0 and self._index < len(self._files):
            chunk = self._files[self._index].read(n)
            if not chunk:
                self._index += 1
                continue
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def __enter__(self) -> _ConcatenatedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self._files:
            f.close()


def _dequantized(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A float32 weight; int8/int16 weights carry a per-row `weight_scale`."""
    array = variables[name]
    if array.dtype in (np.int8, np.int16):
        scale = variables[name.replace("weight", "weight_scale")]
        return array.astype(np.float32) / scale.reshape(-1, *([1] * (array.ndim - 1)))
    return array.astype(np.float32)


def _count_layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    return 1 + max(int(m.group(1)) for k in variables if (m := pattern.match(k)))


def _scalar(variables: dict[str, np.ndarray], name: str) -> int:
    return int(np.asarray(variables[name]).reshape(-1)[0])


def convert(variables: dict[str, np.ndarray], config: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Map CTranslate2 variables to (mlx-whisper ModelDimensions, flat weight dict)."""
    w = lambda name: _dequantized(variables, name)  # noqa: E731
    n_audio_layer = _count_layers(variables, "encoder")
    n_text_layer = _count_layers(variables, "decoder")
    conv1 = w("encoder/conv1/weight")
    embedding = w("decoder/embeddings/weight")
    dims = {
        "n_mels": conv1.shape[1],
        "n_audio_ctx": variables["encoder/position_encodings/encodings"].shape[0],
        "n_audio_state": conv1.shape[0],
        "n_audio_head": _scalar(variables, "encoder/num_heads"),
        "n_audio_layer": n_audio_layer,
        "n_vocab": embedding.shape[0],
        "n_text_ctx": variables["decoder/position_encodings/encodings"].shape[0],
        "n_text_state": embedding.shape[1],
        "n_text_head": _scalar(variables, "decoder/num_heads"),
        "n_text_layer": n_text_layer,
    }
    out: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = w(f"{src}/weight")
        if f"{src}/bias" in variables:
            out[f"{dst}.bias"] = w(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = w(f"{src}/gamma")
        out[f"{dst}.bias"] = w(f"{src}/beta")

    def fused(dsts: list[str], src: str) -> None:
        """Split a fused projection; mlx-whisper's key layer has no bias."""
        weights = np.split(w(f"{src}/weight"), len(dsts), axis=0)
        biases = np.split(w(f"{src}/bias"), len(dsts), axis=0)
        for dst, weight, bias in zip(dsts, weights, biases, strict=False):
            out[f"{dst}.weight"] = weight
            if not dst.endswith(".key"):
                out[f"{dst}.bias"] = bias

    for i in (1, 2):  # CTranslate2 conv weights are (out, in, k); MLX wants (out, k, in).
        out[f"encoder.conv{i}.weight"] = w(f"encoder/conv{i}/weight").transpose(0, 2, 1)
        out[f"encoder.conv{i}.bias"] = w(f"encoder/conv{i}/bias")
    for i in range(n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        fused(
            [f"{dst}.attn.{p}" for p in ("query", "key", "value")], f"{src}/self_attention/linear_0"
        )
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        linear(f"{dst}.mlp1", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp2", f"{src}/ffn/linear_1")
    norm("encoder.ln_post", "encoder/layer_norm")

    out["decoder.token_embedding.weight"] = embedding
    out["decoder.positional_embedding"] = w("decoder/position_encodings/encodings")
    for i in range(n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        fused(
            [f"{dst}.attn.{p}" for p in ("query", "key", "value")], f"{src}/self_attention/linear_0"
        )
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
        fused([f"{dst}.cross_attn.{p}" for p in ("key", "value")], f"{src}/attention/linear_1")
        linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        linear(f"{dst}.mlp1", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp2", f"{src}/ffn/linear_1")
    norm("decoder.ln", "decoder/layer_norm")

    extras = {"alignment_heads": config.get("alignment_heads")}
    return {**dims, **extras}, out


def model_bin_parts(folder: Path) -> list[Path]:
    """model.bin, or its split parts model.bin.part1, part2, ... in order."""
    whole = folder / "model.bin"
    if whole.exists():
        return [whole]
    parts = sorted(folder.glob("model.bin.part*"), key=lambda p: int(p.suffix[5:] or 0))
    if not parts:
        raise ModelFormatError(f"{folder} holds no model.bin or model.bin.part* files")
    return parts


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}
