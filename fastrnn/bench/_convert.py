"""The benchmark's peers built from a fastrnn layer, on top of fastrnn.io (which owns every
gate order and layout).

to_onnx_model differs from fastrnn.io.onnx.to_onnx_model on purpose: it is the bare LSTM/GRU node
(output Y [T, D, B, H]), without the Transpose/Reshape nodes the exporter appends for a
batch-major result, so ONNX Runtime is timed on its RNN kernel alone.
"""
import numpy as np

from fastrnn.io import _common
from fastrnn.io.keras import to_keras
from fastrnn.io.onnx import GATE_ORDER as _ONNX_ORDER
from fastrnn.io.torch import to_torch_module  # noqa: F401  (re-exported for the peers)


def _check_plain(layer, what):
    if getattr(layer, "reverse", False):
        raise ValueError(f"{what}: reverse=True layers have no equivalent")


def to_onnx_model(layer):
    """An onnx.ModelProto with one LSTM/GRU node (opset 14) holding the layer's weights.

    Layout: the ONNX default, layout=0, SEQUENCE-FIRST. Graph input "X" is [T, B, I]; outputs
    "Y" [T, num_directions, B, H], "Y_h" (and "Y_c" for LSTM) [num_directions, B, H]. Callers
    with batch-first data transpose before and after (the benchmark does it outside the timed
    region). No sequence_lens / initial-state inputs (add them to the node if needed). GRU
    reset_after=True maps to linear_before_reset=1.

    What the benchmark relies on (peers.OnnxRuntimePeer): one LSTM/GRU node whose X is a graph
    input; its `layout` attribute is honoured (1 = batch-first); optional inputs it needs
    (sequence_lens, initial_h, initial_c) are wired in when absent."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    _check_plain(layer, "to_onnx_model")
    if layer.variant_features:
        raise ValueError(f"to_onnx_model: the benchmark's ONNX node is the plain cell; "
                         f"{layer!r} has {', '.join(layer.variant_features)}")
    if layer.num_layers != 1:
        raise ValueError("to_onnx_model: ONNX LSTM/GRU nodes are single-layer; "
                         "export one layer at a time")
    cell = layer._cell
    dirs = _common.DIRECTIONS[:layer.num_directions]
    parts = [_common.join_rows(layer, _ONNX_ORDER[cell], 0, d) for d in dirs]
    W = np.stack([w for w, _, _, _ in parts])
    R = np.stack([r for _, r, _, _ in parts])
    G, H = len(_ONNX_ORDER[cell]), layer.hidden_size
    zeros = np.zeros(2 * G * H, layer.dtype)
    B = np.stack([np.concatenate([bw, br]) if bw is not None else zeros
                  for _, _, bw, br in parts])
    elem = TensorProto.DOUBLE if layer.dtype == np.float64 else TensorProto.FLOAT
    H, D = layer.hidden_size, len(dirs)
    outputs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    attrs = dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward", layout=0)
    if cell == "gru":
        attrs["linear_before_reset"] = int(layer.reset_after)
    node = helper.make_node(cell.upper(), ["X", "W", "R", "B"], outputs, **attrs)
    graph = helper.make_graph(
        [node], f"fastrnn_{cell}",
        [helper.make_tensor_value_info("X", elem, ["T", "batch", layer.input_size])],
        [helper.make_tensor_value_info("Y", elem, ["T", D, "batch", H])]
        + [helper.make_tensor_value_info(n, elem, [D, "batch", H]) for n in outputs[1:]],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(a), n)
                     for a, n in ((W, "W"), (R, "R"), (B, "B"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)],
                              producer_name="fastrnn")
    model.ir_version = min(model.ir_version, 8)  # readable by older runtimes too
    onnx.checker.check_model(model)
    return model


def to_keras_layer(layer):
    """A built keras.layers.LSTM / GRU (return_sequences=True, return_state=True) holding the
    layer's weights; Keras must already be importable (the caller picks the backend)."""
    import keras

    _check_plain(layer, "to_keras_layer")
    if layer.num_layers != 1 or layer.bidirectional:
        raise ValueError("to_keras_layer: single-layer unidirectional layers only")
    dtype = "float64" if layer.dtype == np.float64 else "float32"
    kw = dict(return_sequences=True, return_state=True, use_bias=layer.use_bias, dtype=dtype)
    if layer._cell == "lstm":
        klayer = keras.layers.LSTM(layer.hidden_size, **kw)
    else:
        klayer = keras.layers.GRU(layer.hidden_size, reset_after=layer.reset_after, **kw)
    klayer.build((None, None, layer.input_size))
    klayer.set_weights(to_keras(layer))
    return klayer
