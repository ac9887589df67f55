"""ONNX `LSTM` / `GRU` nodes (opset 7-22 schema), loading and exporting.

Layout (layout=0): W [D, G*H, I], R [D, G*H, H], B [D, 2*G*H] = [Wb, Rb]; row blocks LSTM
i,o,f,c and GRU z,r,h; direction 0 is forward, 1 backward. GRU `linear_before_reset=1` is
fastrnn reset_after=True, 0 is reset_after=False (Rbh then acts outside the reset, as fastrnn's
reset_after=False recurrent_bias does). `sequence_lens` semantics equal fastrnn `lengths` with
masked_output="zero". W, R and B are found through the node's inputs (initializers or Constant
nodes), never by name, so models from torch.onnx.export load as they are (one node per layer:
a stacked module gives a dict node name -> layer).
"""
import numpy as np

from ._common import (DIRECTIONS, build, join_rows, read_source, require, single_or_dict,
                      split_rows)

GATE_ORDER = {"lstm": ("input", "output", "forget", "cell"),    # ONNX i, o, f, c
              "gru": ("update", "reset", "candidate")}          # ONNX z, r, h
_DEFAULT_ACTIVATIONS = {"lstm": ["sigmoid", "tanh", "tanh"], "gru": ["sigmoid", "tanh"]}
_KNOWN = {"direction", "hidden_size", "linear_before_reset", "layout", "activations", "clip",
          "input_forget", "activation_alpha", "activation_beta"}
OPSET = 17


def _onnx():
    return require("onnx", "onnx")


def _model(source):
    onnx = _onnx()
    if isinstance(source, onnx.ModelProto):
        return source, "ONNX model"
    data, label = read_source(source)
    try:
        model = onnx.ModelProto()
        model.ParseFromString(data)
    except Exception as exc:  # google.protobuf.message.DecodeError
        raise ValueError(f"{label}: not a readable ONNX model ({type(exc).__name__})") from exc
    if not model.graph.node and not model.graph.initializer:
        raise ValueError(f"{label}: not an ONNX model (empty graph)")
    return model, label


def _constants(graph):
    from onnx import numpy_helper
    consts = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = attr.t
    return consts, numpy_helper


def from_onnx(source, node=None, *, dtype=None):
    """Layer(s) of the LSTM / GRU nodes of an ONNX model (path, bytes or ModelProto): one layer,
    or a dict node name -> layer in graph order; `node` picks one by name."""
    model, label = _model(source)
    consts, numpy_helper = _constants(model.graph)
    layers = {}
    for i, n in enumerate(model.graph.node):
        if n.op_type in ("LSTM", "GRU") and n.domain in ("", "ai.onnx"):
            name = n.name or f"{n.op_type}_{i}"
            layers[name] = _layer(n, name, consts, numpy_helper, label, dtype)
    return single_or_dict(layers, node, label)


def _input(n, index, consts, numpy_helper, label, name, what):
    if len(n.input) <= index or not n.input[index]:
        return None
    src = n.input[index]
    if src not in consts:
        raise ValueError(f"{label}: node {name!r} input {what} ({src!r}) is not a constant "
                         "initializer; only constant weights can be loaded")
    try:
        return numpy_helper.to_array(consts[src])
    except Exception as exc:
        raise ValueError(f"{label}: node {name!r} input {what} is an unreadable tensor "
                         f"({exc})") from exc


def _layer(n, name, consts, numpy_helper, label, dtype):
    from onnx import helper
    cell = n.op_type.lower()
    G = 4 if cell == "lstm" else 3
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    where = f"{label}: {n.op_type} node {name!r}"
    for key in attrs:
        if key not in _KNOWN:
            raise ValueError(f"{where}: unknown attribute {key!r}")
    for key in ("clip", "activation_alpha", "activation_beta"):
        if key in attrs:
            raise ValueError(f"{where}: attribute {key!r} is not supported")
    if attrs.get("input_forget", 0):
        raise ValueError(f"{where}: attribute 'input_forget'=1 (coupled input/forget gate) is "
                         "not supported")
    if attrs.get("layout", 0) != 0:
        raise ValueError(f"{where}: attribute 'layout'={attrs['layout']} (batch-major) is not "
                         "supported")
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else str(direction)
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"{where}: attribute 'direction'={direction!r} is invalid")
    D = 2 if direction == "bidirectional" else 1
    if "activations" in attrs:
        acts = [a.decode().lower() if isinstance(a, bytes) else str(a).lower()
                for a in attrs["activations"]]
        if acts != _DEFAULT_ACTIVATIONS[cell] * D:
            raise ValueError(f"{where}: attribute 'activations'={acts} is not supported (only "
                             f"the defaults {_DEFAULT_ACTIVATIONS[cell] * D})")
    reset_after = bool(attrs.get("linear_before_reset", 0)) if cell == "gru" else True
    if cell == "lstm" and "linear_before_reset" in attrs:
        raise ValueError(f"{where}: attribute 'linear_before_reset' is not an LSTM attribute")
    get = lambda i, what: _input(n, i, consts, numpy_helper, label, name, what)  # noqa: E731
    W, R, B = get(1, "W"), get(2, "R"), get(3, "B")
    if W is None or R is None:
        raise ValueError(f"{where}: W and R inputs are required")
    if cell == "lstm":
        P = get(7, "P")
        if P is not None and np.any(P):
            raise ValueError(f"{where}: peepholes (input P) are not supported")
    if W.ndim != 3 or W.shape[0] != D or W.shape[1] % G:
        raise ValueError(f"{where}: W has shape {W.shape}, expected [{D}, {G}*H, input_size]")
    H = W.shape[1] // G
    if "hidden_size" in attrs and attrs["hidden_size"] != H:
        raise ValueError(f"{where}: hidden_size={attrs['hidden_size']} but W implies {H}")
    if R.shape != (D, G * H, H):
        raise ValueError(f"{where}: R has shape {R.shape}, expected {(D, G * H, H)}")
    if B is not None and B.shape != (D, 2 * G * H):
        raise ValueError(f"{where}: B has shape {B.shape}, expected {(D, 2 * G * H)}")
    sd = {}
    for d in range(D):
        b_w = None if B is None else B[d, :G * H]
        b_r = None if B is None else B[d, G * H:]
        split_rows(cell, GATE_ORDER[cell], W[d], R[d], b_w, b_r, H,
                   f"layer0.{DIRECTIONS[d]}", sd)
    return build(cell, W.shape[2], H, sd, dtype=dtype, bidirectional=D == 2,
                 reverse=direction == "reverse", use_bias=B is not None,
                 reset_after=reset_after, name=name)


# ---------------------------------------------------------------------------------------------
# Export

def to_onnx_model(layer, *, sequence_lens=False, initial_state=False, opset=OPSET):
    """An ONNX model computing `layer` with one LSTM / GRU node per stacked layer.

    Inputs (sequence-first, ONNX's native layout=0): `X` [time, batch, input_size]; with
    `sequence_lens=True` also `sequence_lens` [batch] int32 (needs masked_output="zero"); with
    `initial_state=True` also `initial_h` (and `initial_c` for LSTM) [layers*directions, batch,
    hidden] in fastrnn/PyTorch order. Outputs: `Y` [time, batch, directions*hidden] and `Y_h`
    (and `Y_c`) [layers*directions, batch, hidden]. Run with onnxruntime:
    `sess.run(None, {"X": x.transpose(1, 0, 2)})[0].transpose(1, 0, 2)` equals `layer(x)[0]`.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper
    if sequence_lens and layer.masked_output != "zero":
        raise ValueError("ONNX outputs zeros past sequence_lens; a layer with "
                         "masked_output='carry' cannot be exported with sequence_lens")
    cell, D, H, L = layer._cell, layer.num_directions, layer.hidden_size, layer.num_layers
    elem = TensorProto.DOUBLE if layer.dtype == np.float64 else TensorProto.FLOAT
    direction = "bidirectional" if D == 2 else "reverse" if layer.reverse else "forward"
    op = "LSTM" if cell == "lstm" else "GRU"
    inputs = [helper.make_tensor_value_info("X", elem, ["time", "batch", layer.input_size])]
    if sequence_lens:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32,
                                                    ["batch"]))
    state_names = ["h", "c"] if cell == "lstm" else ["h"]
    if initial_state:
        for s in state_names:
            inputs.append(helper.make_tensor_value_info(f"initial_{s}", elem,
                                                        [L * D, "batch", H]))
    nodes, inits = [], [numpy_helper.from_array(np.array([0, 0, -1], np.int64), "flat_shape")]
    x = "X"
    finals = {s: [] for s in state_names}
    for k in range(L):
        Ws, Rs, Bs = [], [], []
        for d in DIRECTIONS[:D]:
            W, R, b_w, b_r = join_rows(layer, GATE_ORDER[cell], k, d)
            Ws.append(W)
            Rs.append(R)
            if layer.use_bias:
                Bs.append(np.concatenate([b_w, b_r]))
        dt = layer.dtype
        inits += [numpy_helper.from_array(np.stack(Ws).astype(dt), f"W_{k}"),
                  numpy_helper.from_array(np.stack(Rs).astype(dt), f"R_{k}")]
        node_inputs = [x, f"W_{k}", f"R_{k}", ""]
        if layer.use_bias:
            inits.append(numpy_helper.from_array(np.stack(Bs).astype(dt), f"B_{k}"))
            node_inputs[3] = f"B_{k}"
        node_inputs.append("sequence_lens" if sequence_lens else "")
        if initial_state:
            for s in state_names:
                if L == 1:
                    node_inputs.append(f"initial_{s}")
                    continue
                for nm, v in ((f"start_{k}", k * D), (f"end_{k}", (k + 1) * D), ("axis0", 0)):
                    if not any(i.name == nm for i in inits):
                        inits.append(numpy_helper.from_array(np.array([v], np.int64), nm))
                nodes.append(helper.make_node("Slice", [f"initial_{s}", f"start_{k}",
                                                        f"end_{k}", "axis0"],
                                              [f"initial_{s}_{k}"]))
                node_inputs.append(f"initial_{s}_{k}")
        while node_inputs and node_inputs[-1] == "":
            node_inputs.pop()
        outs = [f"Y_raw_{k}"] + [f"Y_{s}_{k}" if L > 1 else f"Y_{s}" for s in state_names]
        attrs = dict(hidden_size=H, direction=direction)
        if cell == "gru":
            attrs["linear_before_reset"] = int(layer.reset_after)
        nodes.append(helper.make_node(op, node_inputs, outs, name=f"{op.lower()}_{k}", **attrs))
        for s in state_names:
            finals[s].append(outs[1 + state_names.index(s)])
        # [T, D, B, H] -> [T, B, D*H]: the next layer's input and the final Y
        y = "Y" if k == L - 1 else f"X_{k + 1}"
        nodes.append(helper.make_node("Transpose", [f"Y_raw_{k}"], [f"Y_tbdh_{k}"],
                                      perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [f"Y_tbdh_{k}", "flat_shape"], [y]))
        x = y
    if L > 1:
        for s in state_names:
            nodes.append(helper.make_node("Concat", finals[s], [f"Y_{s}"], axis=0))
    outputs = [helper.make_tensor_value_info("Y", elem, ["time", "batch", D * H])]
    outputs += [helper.make_tensor_value_info(f"Y_{s}", elem, [L * D, "batch", H])
                for s in state_names]
    graph = helper.make_graph(nodes, layer.name or f"fastrnn_{cell}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="fastrnn")
    model.ir_version = 8  # readable by older runtimes; opset 17 needs IR >= 8
    onnx.checker.check_model(model)
    return model


def save_onnx(layer, path, **kwargs):
    onnx = _onnx()
    onnx.save(to_onnx_model(layer, **kwargs), path)
