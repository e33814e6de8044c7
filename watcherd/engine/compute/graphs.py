"""ONNX graphs over the model's own weights, run by ONNX Runtime on the CPU.

ONNX Runtime is here already for the VAD. Its CPU kernels (MLAS) run what MLX's CPU
backend and NumPy do slowly: fused, vectorised softmax, GELU and layer norm, and products
by weights packed once. A graph is built with `onnx` from placeholders, and the weights
are handed over from memory (views of the MLX arrays), never serialised into the graph.
ONNX Runtime still copies them into each session as it starts: its two ways to use a
caller's buffer in place (`add_initializer`, an in-memory address in the placeholder)
refuse placeholders without data.
"""

from __future__ import annotations

import numpy as np
import onnxruntime
from mlx.utils import tree_flatten
from onnx import GraphProto, TensorProto, helper

OPSET = 17
IR_VERSION = 8  # ONNX 1.12's, the first release with opset 17


class Weights:
    """NumPy views (no copies) of an MLX module's float32 parameters, by dotted name."""

    def __init__(self, module, eps: float = 1e-5):
        parameters = tree_flatten(module.parameters())
        self.arrays = {name: np.array(a, copy=False) for name, a in parameters}
        self.eps = eps

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


class Graph:
    """A session for `graph`, whose initializers are `constants` (name -> array: float32,
    or int8 for quantized weights)."""

    def __init__(
        self,
        graph: GraphProto,
        constants: dict[str, np.ndarray],
        threads: int = 1,
        prepack: bool = True,
    ):
        self.threads = threads
        graph.initializer.extend(_placeholder(name, a) for name, a in constants.items())
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
        # The IR version of opset 17, not the newest the `onnx` package knows: an older
        # ONNX Runtime (the newest for Python 3.10 is 1.23) refuses a newer IR.
        model = helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle threads sleep rather than spin: the encoder and decoder run side by side.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not prepack:  # products by many rows gain nothing from a packed copy
            options.add_session_config_entry("session.disable_prepacking", "1")
        # Kept alive here: the session reads them when it packs, or on every run.
        self.constants = {name: onnxruntime.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a))
                          for name, a in constants.items()}  # fmt: skip
        options.add_external_initializers(list(self.constants), list(self.constants.values()))
        self.session = onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def run(self, **inputs: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The graph's output, or its outputs."""
        outputs = self.session.run(None, inputs)
        return outputs[0] if len(outputs) == 1 else outputs


class Builder:
    """The nodes of a graph over a model's weights (`cpu.Weights`), and the constants it
    reads. Values are named by the node that makes them."""

    def __init__(self, weights: Weights) -> None:
        self.w = weights
        self.nodes: list = []
        self.constants: dict[str, np.ndarray] = {}

    def node(self, op: str, *inputs: str, **attributes) -> str:
        output = f"{op}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, list(inputs), [output], **attributes))
        return output

    def constant(self, name: str, array: np.ndarray) -> str:
        """A float32 constant (quantized weights stay uint8)."""
        dtype = np.uint8 if array.dtype == np.uint8 else np.float32
        self.constants[name] = np.ascontiguousarray(array, dtype)
        return name

    def shape(self, name: str, dims: list[int]) -> str:
        value = helper.make_tensor(name, TensorProto.INT64, [len(dims)], dims)
        self.nodes.append(helper.make_node("Constant", [], [name], value=value))
        return name

    def linear(self, x: str, name: str) -> str:
        """x @ weight.T + bias for rows x, the weight read as MLX keeps it (out, in)."""
        inputs = [x, self.constant(f"{name}.weight", self.w[f"{name}.weight"])]
        if f"{name}.bias" in self.w.arrays:
            inputs.append(self.constant(f"{name}.bias", self.w[f"{name}.bias"]))
        return self.node("Gemm", *inputs, transB=1)

    def int8_product(self, x: str, name: str, weight: np.ndarray, block: int = 32) -> str:
        """x @ weight.T for rows x, `weight` (out, in) stored as int8, a scale per block of
        `block` inputs; each row of x quantized on the fly per block too (ONNX Runtime's
        MatMulNBits, accuracy level 4): a quarter of the bytes to read, and per-block
        scales follow the outliers a layer norm's output has."""
        out, width = weight.shape
        blocks = weight.reshape(out, width // block, block)
        scale = np.abs(blocks).max(axis=2) / 127.0
        scale[scale == 0] = 1.0
        codes = np.clip(np.round(blocks / scale[..., None]), -127, 127) + 128
        inputs = [x, self.constant(f"{name}.int8", codes.astype(np.uint8)),
                  self.constant(f"{name}.scale", scale.reshape(-1))]  # fmt: skip
        return self.node("MatMulNBits", *inputs, domain="com.microsoft", K=width, N=out,
                         bits=8, block_size=block, accuracy_level=4)  # fmt: skip

    def layer_norm(self, x: str, name: str) -> str:
        weight = self.constant(f"{name}.weight", self.w[f"{name}.weight"])
        bias = self.constant(f"{name}.bias", self.w[f"{name}.bias"])
        return self.node("LayerNormalization", x, weight, bias, axis=-1, epsilon=self.w.eps)

    def scaled(self, x: str, scale: float) -> str:
        return self.node("Mul", x, self.constant(f"scale_{len(self.nodes)}", np.float32(scale)))

    def build(
        self,
        inputs: list,
        outputs: dict[str, tuple[str, list]],
        threads: int = 1,
        prepack: bool = True,
    ) -> Graph:
        """A session for the nodes so far: `outputs` names values (name -> (value, shape))."""
        named = [helper.make_node("Identity", [value], [name])
                 for name, (value, _) in outputs.items()]  # fmt: skip
        results = [tensor(name, shape) for name, (_, shape) in outputs.items()]
        graph = helper.make_graph(self.nodes + named, "graph", inputs, results)
        return Graph(graph, self.constants, threads, prepack)


def tensor(name: str, shape: list) -> object:
    """A float32 graph input or output; a dimension may be a name (any size)."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _placeholder(name: str, array: np.ndarray) -> TensorProto:
    """A constant with a name, a type and a shape, whose values are 'external': supplied
    from memory by `add_external_initializers`."""
    kind = TensorProto.UINT8 if array.dtype == np.uint8 else TensorProto.FLOAT
    placeholder = TensorProto(name=name, data_type=kind)
    placeholder.dims.extend(array.shape)
    placeholder.data_location = TensorProto.EXTERNAL
    for key, value in (("location", name), ("offset", "0"), ("length", str(array.nbytes))):
        entry = placeholder.external_data.add()
        entry.key, entry.value = key, value
    return placeholder
