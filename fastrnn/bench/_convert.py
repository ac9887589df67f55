"""Weight conversion from a fastrnn layer to the benchmark's peers, kept in this one file.

The benchmark calls only these functions, which have the same signatures as the package's
loaders/exporters (`fastrnn.io.onnx.to_onnx_model`, `fastrnn.io.torch.to_torch_module`), so
this file can become plain re-exports of those.

Scope: what the benchmark builds - single-layer, unidirectional, forward layers (more layers and
directions are converted too where the target format has them). Gate orders:
fastrnn LSTM (input, forget, cell, output), GRU (update, reset, candidate);
torch LSTM [i, f, g, o], GRU [r, z, n]; ONNX LSTM [i, o, f, c], GRU [z, r, h];
Keras LSTM [i, f, c, o], GRU [z, r, h].
"""
import numpy as np

_TORCH_ORDER = {"lstm": ("input", "forget", "cell", "output"),
                "gru": ("reset", "update", "candidate")}
_ONNX_ORDER = {"lstm": ("input", "output", "forget", "cell"),
               "gru": ("update", "reset", "candidate")}
_KERAS_ORDER = {"lstm": ("input", "forget", "cell", "output"),
                "gru": ("update", "reset", "candidate")}


def _cell(layer):
    return "lstm" if layer._num_gates == 4 else "gru"


def _reset_after(layer):
    return getattr(layer, "reset_after", True)


def _stacked(layer, k, direction, order, part, transpose):
    """(G*H, rows) if transpose else (rows, G*H) matrix / (G*H,) vector of one part in `order`;
    a missing part (LSTM recurrent_bias) is zeros."""
    sd = layer.state_dict()
    H = layer.hidden_size
    blocks = []
    for g in order:
        key = f"layer{k}.{direction}.{g}.{part}"
        v = sd[key] if key in sd else np.zeros(H, layer.dtype)
        blocks.append(v.T if transpose else v)
    return np.concatenate(blocks, axis=0 if (transpose or v.ndim == 1) else 1)


def _check_plain(layer, what):
    if getattr(layer, "reverse", False):
        raise ValueError(f"{what}: reverse=True layers have no equivalent")


def to_torch_module(layer):
    """torch.nn.LSTM / torch.nn.GRU (batch_first=True) with the layer's weights and dtype.
    torch's GRU is reset-after only; LSTM biases go into bias_ih (bias_hh = 0)."""
    import torch

    _check_plain(layer, "to_torch_module")
    cell = _cell(layer)
    if cell == "gru" and not _reset_after(layer):
        raise ValueError("to_torch_module: torch.nn.GRU has no reset_after=False variant")
    cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    mod = cls(layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
              bidirectional=layer.bidirectional, batch_first=True)
    mod = mod.to(torch.float64 if layer.dtype == np.float64 else torch.float32)
    order = _TORCH_ORDER[cell]
    dirs = ["forward", "backward"] if layer.bidirectional else ["forward"]
    with torch.no_grad():
        for k in range(layer.num_layers):
            for direction in dirs:
                sfx = f"_l{k}" + ("_reverse" if direction == "backward" else "")
                get = getattr
                get(mod, "weight_ih" + sfx).copy_(torch.from_numpy(
                    _stacked(layer, k, direction, order, "kernel", True)))
                get(mod, "weight_hh" + sfx).copy_(torch.from_numpy(
                    _stacked(layer, k, direction, order, "recurrent", True)))
                get(mod, "bias_ih" + sfx).copy_(torch.from_numpy(
                    _stacked(layer, k, direction, order, "bias", False)))
                get(mod, "bias_hh" + sfx).copy_(torch.from_numpy(
                    _stacked(layer, k, direction, order, "recurrent_bias", False)))
    return mod


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
    if layer.num_layers != 1:
        raise ValueError("to_onnx_model: ONNX LSTM/GRU nodes are single-layer; "
                         "export one layer at a time")
    cell = _cell(layer)
    order = _ONNX_ORDER[cell]
    dirs = ["forward", "backward"] if layer.bidirectional else ["forward"]
    W = np.stack([_stacked(layer, 0, d, order, "kernel", True) for d in dirs])
    R = np.stack([_stacked(layer, 0, d, order, "recurrent", True) for d in dirs])
    B = np.stack([np.concatenate([_stacked(layer, 0, d, order, "bias", False),
                                  _stacked(layer, 0, d, order, "recurrent_bias", False)])
                  for d in dirs])
    elem = TensorProto.DOUBLE if layer.dtype == np.float64 else TensorProto.FLOAT
    H, D = layer.hidden_size, len(dirs)
    outputs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    attrs = dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward", layout=0)
    if cell == "gru":
        attrs["linear_before_reset"] = 1 if _reset_after(layer) else 0
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
    cell = _cell(layer)
    order = _KERAS_ORDER[cell]
    dtype = "float64" if layer.dtype == np.float64 else "float32"
    kernel = _stacked(layer, 0, "forward", order, "kernel", False)
    recurrent = _stacked(layer, 0, "forward", order, "recurrent", False)
    bias = _stacked(layer, 0, "forward", order, "bias", False)
    if cell == "lstm":
        klayer = keras.layers.LSTM(layer.hidden_size, return_sequences=True, return_state=True,
                                   dtype=dtype)
    else:
        klayer = keras.layers.GRU(layer.hidden_size, return_sequences=True, return_state=True,
                                  reset_after=_reset_after(layer), dtype=dtype)
        rbias = _stacked(layer, 0, "forward", order, "recurrent_bias", False)
        # reset-before: every recurrent bias sits outside the reset product, so it sums
        bias = np.stack([bias, rbias]) if _reset_after(layer) else bias + rbias
    klayer.build((None, None, layer.input_size))
    klayer.set_weights([kernel, recurrent, bias])
    return klayer
