"""ONNX graphs over the model's own weights, run by ONNX Runtime on the CPU.

ONNX Runtime is here already for the VAD. Its CPU kernels (MLAS) run what MLX's CPU
backend and NumPy do slowly here: fused, vectorised softmax, GELU and layer norm, and
products by weights packed once. A graph is built with `onnx` from placeholders, and
the weights are handed over from memory (views of the MLX arrays), never copied into
the graph.
"""

from __future__ import annotations

import numpy as np
import onnxruntime
from onnx import GraphProto, TensorProto, helper


class Graph:
    """A session for `graph`, whose initializers are `constants` (name -> float32 array)."""

    def __init__(
        self,
        graph: GraphProto,
        constants: dict[str, np.ndarray],
        threads: int = 1,
        prepack: bool = True,
    ):
        graph.initializer.extend(_placeholder(name, a.shape) for name, a in constants.items())
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
        model = helper.make_model(graph, opset_imports=opsets)
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

    def run(self, **inputs: np.ndarray) -> np.ndarray:
        """The graph's one output."""
        (out,) = self.session.run(None, inputs)
        return out


def tensor(name: str, shape: list) -> object:
    """A float32 graph input or output; a dimension may be a name (any size)."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _placeholder(name: str, shape: tuple[int, ...]) -> TensorProto:
    """A float32 constant with a name and a shape, whose values are 'external': supplied
    from memory by `add_external_initializers`."""
    placeholder = TensorProto(name=name, data_type=TensorProto.FLOAT)
    placeholder.dims.extend(shape)
    placeholder.data_location = TensorProto.EXTERNAL
    size = 4 * int(np.prod(shape))
    for key, value in (("location", name), ("offset", "0"), ("length", str(size))):
        entry = placeholder.external_data.add()
        entry.key, entry.value = key, value
    return placeholder
