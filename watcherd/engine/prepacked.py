"""Products by fixed weights, packed once: ONNX Runtime's MLAS `Gemm`, in float32.

The decoder multiplies a few rows (the batch's live rows, 1 to 8) by every weight matrix
on every step. OpenBLAS packs the weight again on each such call and takes a slow path at
2 to 7 rows: (3, 384) x (384, 1536) took 0.29 ms, 5x a row at a time. MLAS packs a constant
weight once, when its session is made, and runs the same float32 arithmetic (results
within 1e-6): 0.08 ms there; the vocabulary projection at 3 rows 11 -> 4.5 ms on one core,
3 ms on two. Decoding a batch of 3 chunks: 1.11 -> 0.90 s; of 8: 1.71 -> 1.64 s.

ONNX Runtime is here already for the VAD; each product is a one-node graph built with
`onnx`, its weights handed over from memory (no copy into the graph). The packed copies
cost about the weights' size again.
"""

from __future__ import annotations

import numpy as np
import onnxruntime
from onnx import TensorProto, helper


class Linear:
    """y = x @ weight.T + bias for x (n, in); weight (out, in) as MLX and PyTorch keep it."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None, threads: int = 1):
        out_features, in_features = weight.shape
        constants = {"weight": weight} | ({"bias": bias} if bias is not None else {})
        node = helper.make_node("Gemm", ["x", *constants], ["y"], transB=1)
        graph = helper.make_graph(
            [node], "linear",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", in_features])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", out_features])],
            # Placeholders: the values come from `add_initializer` below.
            [_placeholder(name, array.shape) for name, array in constants.items()],
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = _options(threads)
        # The weights go in as views of our arrays, not copied into the graph: ONNX
        # Runtime reads them once to pack its own copy.
        self.constants = {name: onnxruntime.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a))
                          for name, a in constants.items()}  # fmt: skip
        options.add_external_initializers(list(self.constants), list(self.constants.values()))
        self.session = onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), np.float32)
        (y,) = self.session.run(None, {"x": rows})
        return y.reshape(*x.shape[:-1], y.shape[-1])


def _placeholder(name: str, shape: tuple[int, ...]) -> TensorProto:
    """A float32 constant with a name and a shape, whose values are 'external': supplied
    from memory by `add_external_initializers`."""
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT)
    tensor.dims.extend(shape)
    tensor.data_location = TensorProto.EXTERNAL
    size = 4 * int(np.prod(shape))
    for key, value in (("location", name), ("offset", "0"), ("length", str(size))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _options(threads: int) -> onnxruntime.SessionOptions:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle threads sleep rather than spin: the encoder may be running beside the decoder.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
