"""ONNX `LSTM` / `GRU` nodes (opset 7-22 schema) and torch-exported `LSTMCell` / `GRUCell`
subgraphs, loading and exporting.

Node layout: W [D, G*H, I], R [D, G*H, H], B [D, 2*G*H] = [Wb, Rb], P [D, 3*H]; row blocks LSTM
i,o,f,c (P: i,o,f) and GRU z,r,h; direction 0 is forward, 1 backward. GRU
`linear_before_reset=1` is fastrnn reset_after=True, 0 is reset_after=False (Rbh then acts
outside the reset, as fastrnn's reset_after=False recurrent_bias does). `sequence_lens`
semantics equal fastrnn `lengths` with masked_output="zero".

What `from_onnx` recognises (one fastrnn layer each; a model with several gives a dict
name -> layer in graph order, depth first):

* `LSTM` / `GRU` nodes of the default domain, in the main graph and, recursively, in the
  subgraphs of `If` (then_branch, else_branch), `Loop` and `Scan` (body) nodes (any node's graph
  attribute is searched). A top-level node is named by its node name, or `{op_type}_{index}`
  when it has none; a node inside a subgraph by its path, e.g. `If_0.then_branch/LSTM_3`
  (each step `{node name or op_type_index}.{attribute}/`), so that `node=` can pick one branch.
* Attributes: `direction`, `hidden_size`, `linear_before_reset`, `activations` with
  `activation_alpha` / `activation_beta`, `clip`, `input_forget` (LSTM), `layout` 0 or 1, and
  the peephole input `P` (`peepholes=True`; an all-zero P is the plain cell). Activation
  parameters are read as ONNX Runtime reads them (rnn_helpers.cc): the two lists are consumed
  in the order of the activations, each function taking only the parameters it has (alpha:
  Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu; beta: Affine, ScaledTanh,
  HardSigmoid); a list that runs out gives LeakyRelu alpha 0.01, HardSigmoid 0.2 / 0.5 and Elu
  1.0 (the ONNX operators' own defaults, which ONNX Runtime uses too). For ThresholdedRelu,
  Affine and ScaledTanh ONNX Runtime substitutes 0.0 where the ONNX operators default to 1.0,
  so a file that leaves those parameters out is refused rather than guessed. (The ONNX
  reference evaluator ignores activations, clip and their parameters altogether.)
  `layout=1` (batch-major X, Y and states) gives the same layer: fastrnn is batch-major, only
  the file's input and output layout differs.
* Weight inputs W, R, B, P are found through the node's inputs, never by name. Each may be an
  initializer, a `Constant`, or computed from those by a sub-DAG of constant operations, also
  across scopes (a subgraph reading its outer graphs' values). That sub-DAG is evaluated with
  numpy following the ONNX opset semantics of the model (e.g. Unsqueeze / Squeeze axes as
  attribute before opset 13 and input from 13; Slice attributes before 10; Split sizes by
  attribute before 13, by input from 13, `num_outputs` from 18). Folded ops: Constant,
  Identity, Cast, CastLike, Reshape, Flatten, Unsqueeze, Squeeze, Transpose, Concat, Slice,
  Gather, Split, Expand, Tile, Add, Sub, Mul, Div, Neg, Shape, Size, ConstantOfShape, Range.
  An input that depends on a graph input (runtime data) or on any other op is refused with a
  ValueError naming the node, the input and the reason. Nothing from the file is executed.
  initial_h / initial_c may depend on runtime data (the state is passed at call time); a
  constant non-zero initial state is refused (a fastrnn layer takes its state per call).
* Models written by fastrnn (`to_onnx_model`) carry the metadata_props entry "fastrnn" (JSON):
  per layer the nodes that form it, its name, masked_output, dropout, recurrent_dropout,
  trainable and the float64 values of its float attributes. Its layers load as written (a
  stack as one stacked layer, under its name); the entry is validated (field types and ranges,
  the named nodes exist, a stack's nodes are chained as fastrnn writes them and share their
  settings) and refused with a ValueError otherwise. Models without it load node by node.
* Cells written as primitive ops, as `torch.onnx.export` writes `nn.LSTMCell` / `nn.GRUCell`
  (checked: the legacy exporter at opset 17, the dynamo exporter at opsets 18 and 20),
  become a one-step layer (call it with T=1, or `step()`):

  LSTM: a `Split` into 4 equal parts along the last axis of S = a sum (`Add` / `Sum` tree) of
  two linear terms and optional constant biases, each term `Gemm(v, W, b)` (transA=0; alpha and
  beta folded; transB either way) or `MatMul(v, W)` with a constant W, over two runtime values
  x and h_prev; then, by dataflow: one part goes through `Tanh` (g), and
  c = Add(Mul(Sigmoid(f), c_prev), Mul(Sigmoid(i), Tanh(g))),
  h = Mul(Sigmoid(o), Tanh(c)) (operands of Add / Mul in either order). The gate of each part
  follows from where it flows, not from its position. Which of the two terms is recurrent: the
  one with H input columns when the input size differs from H; otherwise the one whose value
  shares its source tensor with c_prev (through Gather / Slice / Squeeze / Unsqueeze / Reshape /
  Identity / Split, as a packed state [h; c] does); otherwise the term added first (torch's
  order, `h @ W_hh.T + x @ W_ih.T`). Named `{path}LSTMCell_{k}`, k counting cells in the graph.
  GRU: two `Split`s into 3 equal parts of linear terms gi (over x) and gh (over h_prev), with
  r = Sigmoid(gi_r + gh_r), z = Sigmoid(gi_z + gh_z), n = Tanh(gi_n + r * gh_n) and
  h = Add(Mul(Sub(h_prev, n), z), n), or Add(Mul(z, h_prev), Mul(Sub(1, z), n)), with the h_prev
  of gh (torch's reset-after cell: reset_after=True). Named `{path}GRUCell_{k}`.
  Other decompositions (peepholes, other activations, a reset-before GRU) are not matched.
"""
import numpy as np

from ._common import (DIRECTIONS, build, join_rows, read_source, require, single_or_dict,
                      split_rows)

GATE_ORDER = {"lstm": ("input", "output", "forget", "cell"),    # ONNX i, o, f, c
              "gru": ("update", "reset", "candidate")}          # ONNX z, r, h
_SLOTS = {"lstm": 3, "gru": 2}
_KNOWN = {"lstm": {"direction", "hidden_size", "layout", "activations", "clip", "input_forget",
                   "activation_alpha", "activation_beta"},
          "gru": {"direction", "hidden_size", "linear_before_reset", "layout", "activations",
                  "clip", "activation_alpha", "activation_beta"}}
# ONNX Runtime's table (onnxruntime/core/providers/cpu/rnn/rnn_helpers.cc): which parameters
# each activation consumes from activation_alpha / activation_beta, and the defaults it uses
# when a list has run out. None: ONNX Runtime (0.0) and the ONNX operator (1.0) disagree.
_TAKES = {"affine": (True, True), "relu": (False, False), "leakyrelu": (True, False),
          "thresholdedrelu": (True, False), "tanh": (False, False), "scaledtanh": (True, True),
          "sigmoid": (False, False), "hardsigmoid": (True, True), "elu": (True, False),
          "softsign": (False, False), "softplus": (False, False)}
_DEFAULTS = {"leakyrelu": (0.01, None), "hardsigmoid": (0.2, 0.5), "elu": (1.0, None),
             "thresholdedrelu": (None, None), "affine": (None, None),
             "scaledtanh": (None, None)}
_ONNX_NAMES = {"affine": "Affine", "relu": "Relu", "leakyrelu": "LeakyRelu",
               "thresholdedrelu": "ThresholdedRelu", "tanh": "Tanh", "scaledtanh": "ScaledTanh",
               "sigmoid": "Sigmoid", "hardsigmoid": "HardSigmoid", "elu": "Elu",
               "softsign": "Softsign", "softplus": "Softplus"}
OPSET = 17
_MAX_ELEMENTS = 1 << 28     # a folded tensor larger than this is refused (hostile shapes)
_MAX_DEPTH = 400            # folding recursion


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


def _opset(model):
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1 if model.opset_import else OPSET


def from_onnx(source, node=None, *, dtype=None):
    """Layer(s) of the LSTM / GRU nodes (also inside If / Loop / Scan subgraphs) and of the
    torch-exported LSTMCell / GRUCell patterns of an ONNX model (path, bytes or ModelProto): one
    layer, or a dict name -> layer in graph order; `node` picks one by name (see the module
    docstring for names and what is recognised)."""
    model, label = _model(source)
    layers = {}
    scope = _Scope(model.graph, None, _opset(model), label)
    groups = _stacks(model, scope, label)
    _collect(scope, "", dtype, layers, groups)
    return single_or_dict(layers, node, label)


def _text(value):
    """A protobuf string field as str: a damaged file can hold invalid UTF-8, which the
    protobuf runtime hands over as bytes."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _collect(scope, prefix, dtype, layers, groups=None):
    graph = scope.graph
    groups = groups or {}
    for i, n in enumerate(graph.node):
        tag = _text(n.name) or f"{_text(n.op_type)}_{i}"
        if n.op_type in ("LSTM", "GRU") and n.domain in ("", "ai.onnx"):
            group = groups.get(i) if not prefix else None
            if group is None:
                name = prefix + tag
                layers[name] = _layer(n, name, scope, dtype)
            elif group["first"] == i:  # a layer written by fastrnn: built at its first node
                layers[group["key"]] = _group_layer(group, scope, dtype)
        for attr in n.attribute:
            subs = [attr.g] if attr.HasField("g") else list(attr.graphs)
            for k, sub in enumerate(subs):
                where = _text(attr.name) if len(subs) == 1 else f"{_text(attr.name)}[{k}]"
                _collect(_Scope(sub, scope, scope.opset, scope.label),
                         f"{prefix}{tag}.{where}/", dtype, layers)
    _collect_cells(scope, prefix, dtype, layers)


# ---------------------------------------------------------------------------------------------
# Constant folding

class _NotConstant(Exception):
    """A value that cannot be computed from the file alone; the message says why."""


class _Scope:
    """One graph's names: initializers, node outputs, graph inputs; then its outer graphs."""

    def __init__(self, graph, parent, opset, label):
        self.graph, self.parent, self.opset, self.label = graph, parent, opset, label
        self.inits = {t.name: t for t in graph.initializer}
        self.inputs = {v.name for v in graph.input} - set(self.inits)
        self.producer = {}
        self.consumers = {}
        for i, n in enumerate(graph.node):
            for k, o in enumerate(n.output):
                if o:
                    self.producer[o] = (n, k, i)
            for name in n.input:
                if name:
                    self.consumers.setdefault(name, []).append(n)
        self.memo = {}
        self.busy = set()

    def owner(self, name):
        scope = self
        while scope is not None:
            if name in scope.inits or name in scope.producer or name in scope.inputs:
                return scope
            scope = scope.parent
        return None

    def value(self, name, depth=0):
        """The constant value of `name` (numpy array), or _NotConstant."""
        scope = self.owner(name)
        if scope is None:
            raise _NotConstant(f"{name!r} is not defined in the graph or its outer graphs")
        return scope._value(name, depth)

    def _value(self, name, depth):
        if name in self.memo:
            return self.memo[name]
        if name in self.inits:
            from onnx import numpy_helper
            try:
                v = numpy_helper.to_array(self.inits[name])
            except Exception as exc:
                raise _NotConstant(f"initializer {name!r} is unreadable ({exc})") from exc
            self.memo[name] = v
            return v
        if name in self.inputs:
            raise _NotConstant(f"it depends on the graph input {name!r} (runtime data)")
        if depth > _MAX_DEPTH or name in self.busy:
            raise _NotConstant(f"{name!r} is computed by a chain that is too deep or cyclic")
        n, k, i = self.producer[name]
        self.busy.add(name)
        try:
            outs = _fold(n, self, depth + 1)
        finally:
            self.busy.discard(name)
        for o, v in zip(n.output, outs):
            if o:
                self.memo[o] = v
        if name not in self.memo:
            raise _NotConstant(f"node {n.name or n.op_type!r} gives no output {name!r}")
        return self.memo[name]


def _attrs(n):
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in n.attribute}


def _check_size(shape, what):
    total = 1
    for d in shape:
        if d < 0:
            raise _NotConstant(f"{what}: negative dimension in {list(shape)}")
        total *= int(d)
    if total > _MAX_ELEMENTS:
        raise _NotConstant(f"{what}: {total} elements is more than the folder allows")


def _ints(a):
    return [int(v) for v in np.asarray(a).reshape(-1)]


def _fold(n, scope, depth):
    """Outputs of node `n` (in scope) from constant inputs, following ONNX opset semantics."""
    from onnx import helper, numpy_helper
    op, opset = n.op_type, scope.opset
    tag = f"{op} node {n.name!r}" if n.name else f"{op} node"
    if n.domain not in ("", "ai.onnx"):
        raise _NotConstant(f"it is computed by a {tag} of domain {n.domain!r}, which is not "
                           "folded")
    a = _attrs(n)

    def inp(k, optional=False):
        if k >= len(n.input) or not n.input[k]:
            if optional:
                return None
            raise _NotConstant(f"{tag} lacks input {k}")
        return scope.value(n.input[k], depth)

    try:
        if op == "Constant":
            if "value" in a:
                return [numpy_helper.to_array(a["value"])]
            for key, dt in (("value_float", np.float32), ("value_floats", np.float32),
                            ("value_int", np.int64), ("value_ints", np.int64)):
                if key in a:
                    return [np.array(a[key], dt)]
            raise _NotConstant(f"{tag} has no numeric value attribute")
        if op == "Identity":
            return [inp(0)]
        if op == "Cast":
            to = helper.tensor_dtype_to_np_dtype(int(a["to"]))
            return [inp(0).astype(to)]
        if op == "CastLike":
            return [inp(0).astype(inp(1).dtype)]
        if op == "Reshape":
            x = inp(0)
            if opset < 5:
                shape = list(a["shape"])
            else:
                shape = _ints(inp(1))
            if not a.get("allowzero", 0):
                shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
            return [x.reshape(shape)]
        if op == "Flatten":
            x = inp(0)
            axis = int(a.get("axis", 1))
            axis = axis + x.ndim if axis < 0 else axis
            return [x.reshape(int(np.prod(x.shape[:axis])), -1)]
        if op in ("Unsqueeze", "Squeeze"):
            x = inp(0)
            axes = list(a["axes"]) if opset < 13 and "axes" in a else \
                (_ints(inp(1, optional=True)) if opset >= 13 and len(n.input) > 1
                 and n.input[1] else None)
            if op == "Unsqueeze":
                if axes is None:
                    raise _NotConstant(f"{tag} has no axes")
                rank = x.ndim + len(axes)
                axes = sorted(ax + rank if ax < 0 else ax for ax in axes)
                for ax in axes:
                    x = np.expand_dims(x, ax)
                return [x]
            if axes is None:
                return [np.squeeze(x)]
            return [np.squeeze(x, axis=tuple(ax + x.ndim if ax < 0 else ax for ax in axes))]
        if op == "Transpose":
            x = inp(0)
            perm = a.get("perm")
            return [np.transpose(x, None if perm is None else list(perm))]
        if op == "Concat":
            parts = [scope.value(name, depth) for name in n.input if name]
            return [np.concatenate(parts, axis=int(a["axis"]))]
        if op == "Slice":
            x = inp(0)
            if opset < 10:
                starts, ends = list(a["starts"]), list(a["ends"])
                axes = list(a.get("axes", range(len(starts))))
                steps = [1] * len(starts)
            else:
                starts, ends = _ints(inp(1)), _ints(inp(2))
                axes = _ints(inp(3, True)) if len(n.input) > 3 and n.input[3] else \
                    list(range(len(starts)))
                steps = _ints(inp(4, True)) if len(n.input) > 4 and n.input[4] else \
                    [1] * len(starts)
            index = [slice(None)] * x.ndim
            for s, e, ax, st in zip(starts, ends, axes, steps):
                if st == 0:
                    raise _NotConstant(f"{tag} has a step of 0")
                index[ax + x.ndim if ax < 0 else ax] = slice(s, e, st)
            return [x[tuple(index)]]
        if op == "Gather":
            x, idx = inp(0), inp(1)
            axis = int(a.get("axis", 0))
            axis = axis + x.ndim if axis < 0 else axis
            idx = np.where(idx < 0, idx + x.shape[axis], idx)
            return [np.take(x, idx, axis=axis)]
        if op == "Split":
            x = inp(0)
            axis = int(a.get("axis", 0))
            axis = axis + x.ndim if axis < 0 else axis
            outs = len(n.output)
            if opset < 13:
                sizes = list(a["split"]) if "split" in a else None
                if sizes is None and len(n.input) > 1 and n.input[1] and opset < 2:
                    sizes = _ints(inp(1))
            else:
                sizes = _ints(inp(1)) if len(n.input) > 1 and n.input[1] else None
                if sizes is None and opset >= 18:
                    outs = int(a.get("num_outputs", outs))
            if sizes is None:
                dim = x.shape[axis]
                chunk = -(-dim // outs)
                sizes = [min(chunk, dim - k * chunk) for k in range(outs)]
            bounds = np.cumsum(sizes)[:-1]
            return list(np.split(x, bounds, axis=axis))
        if op == "Expand":
            x, shape = inp(0), _ints(inp(1))
            out_shape = np.broadcast_shapes(x.shape, tuple(shape))
            _check_size(out_shape, tag)
            return [np.broadcast_to(x, out_shape).copy()]
        if op == "Tile":
            x, reps = inp(0), _ints(inp(1))
            _check_size([s * r for s, r in zip(x.shape, reps)], tag)
            return [np.tile(x, reps)]
        if op in ("Add", "Sub", "Mul", "Div"):
            x, y = inp(0), inp(1)
            if opset < 7 and a.get("broadcast", 0):
                raise _NotConstant(f"{tag} uses the legacy 'broadcast' attribute")
            if op == "Div" and x.dtype.kind in "iu":
                return [(np.trunc(np.divide(x, y, dtype=np.float64))).astype(x.dtype)]
            f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
            return [f(x, y).astype(np.result_type(x, y))]
        if op == "Neg":
            return [np.negative(inp(0))]
        if op == "Shape":
            x = inp(0)
            shape = np.array(x.shape, np.int64)
            start, end = a.get("start", 0), a.get("end")
            return [shape[start:end]]
        if op == "Size":
            return [np.array(inp(0).size, np.int64)]
        if op == "ConstantOfShape":
            shape = _ints(inp(0))
            _check_size(shape, tag)
            value = numpy_helper.to_array(a["value"]).reshape(-1) if "value" in a else \
                np.zeros(1, np.float32)
            return [np.full(shape, value[0], value.dtype)]
        if op == "Range":
            start, limit, delta = (inp(k).reshape(()) for k in range(3))
            if delta == 0:
                raise _NotConstant(f"{tag} has delta 0")
            count = max(int(np.ceil((limit - start) / delta)), 0)
            _check_size([count], tag)
            return [(start + delta * np.arange(count)).astype(start.dtype)]
    except _NotConstant:
        raise
    except (KeyError, ValueError, IndexError, TypeError, OverflowError) as exc:
        raise _NotConstant(f"{tag} cannot be evaluated ({type(exc).__name__}: {exc})") from exc
    raise _NotConstant(f"it is computed by a {tag}, an op the loader does not fold")


# ---------------------------------------------------------------------------------------------
# LSTM / GRU nodes

def _node_input(n, index, scope, where, what):
    """A constant node input (folded if need be), None when absent."""
    if len(n.input) <= index or not n.input[index]:
        return None
    src = n.input[index]
    try:
        value = scope.value(src)
    except _NotConstant as exc:
        raise ValueError(f"{where}: input {what} ({src!r}) is not constant: {exc}; only "
                         "weights computed from the file's constants can be loaded") from None
    if value.dtype.kind not in "fiu":
        raise ValueError(f"{where}: input {what} holds {value.dtype}, not numbers")
    return value


def _state_input(n, index, scope, where, what):
    """initial_h / initial_c: runtime inputs are the caller's; a constant must be zero."""
    if len(n.input) <= index or not n.input[index]:
        return
    try:
        value = scope.value(n.input[index])
    except _NotConstant:
        return  # computed at run time: the caller passes the state
    if np.any(np.asarray(value, np.float64) != 0):
        raise ValueError(f"{where}: input {what} is a constant non-zero initial state; a fastrnn "
                         "layer takes its initial state per call (pass it as h0 / c0)")


def _activations(cell, D, attrs, where):
    """ONNX activations + alpha / beta lists -> explicit (name, alpha, beta) per slot."""
    slots = _SLOTS[cell]
    names = [a.decode() if isinstance(a, bytes) else str(a) for a in attrs["activations"]]
    if len(names) != slots * D:
        raise ValueError(f"{where}: attribute 'activations' has {len(names)} entries, expected "
                         f"{slots * D} ({slots} per direction)")
    alphas = [float(v) for v in attrs.get("activation_alpha", [])]
    betas = [float(v) for v in attrs.get("activation_beta", [])]
    out = []
    for name in names:
        key = name.lower()
        if key not in _TAKES:
            raise ValueError(f"{where}: activation {name!r} is not an ONNX RNN activation "
                             f"(one of {', '.join(_ONNX_NAMES.values())})")
        takes_a, takes_b = _TAKES[key]
        da, db = _DEFAULTS.get(key, (None, None))
        params = []
        for takes, values, default, what in ((takes_a, alphas, da, "alpha"),
                                             (takes_b, betas, db, "beta")):
            if not takes:
                params.append(None)
            elif values:
                params.append(values.pop(0))
            elif default is not None:
                params.append(default)
            else:
                raise ValueError(
                    f"{where}: activation {name!r} takes its {what} from activation_{what}, "
                    f"which has run out; ONNX Runtime then uses 0.0 and the ONNX operator's "
                    f"default differs, so the file must give it explicitly")
        out.append((_ONNX_NAMES[key], params[0], params[1]) if takes_a or takes_b
                   else _ONNX_NAMES[key])
    return out


def _node_spec(n, name, scope, exact=None, meta_where=None):
    """(cell, input_size, hidden_size, canonical state_dict under "layer0", constructor
    keywords) of one LSTM / GRU node, validated. `exact`: float64 values of the node's float
    attributes from fastrnn's metadata, used where they round to the node's float32 values."""
    cell = n.op_type.lower()
    G = 4 if cell == "lstm" else 3
    attrs = _attrs(n)
    where = f"{scope.label}: {n.op_type} node {name!r}"
    for key, value in (exact or {}).items():
        stored = attrs.get(key)
        try:
            same = stored is not None and np.array_equal(np.asarray(value, np.float32),
                                                         np.asarray(stored, np.float32))
        except (TypeError, ValueError):  # a non-numeric attribute of that name
            same = False
        if not same:
            raise ValueError(f"{meta_where}: 'float64_attributes' {key}={value!r:.80} does not "
                             f"round to the node {name!r}'s attribute ({stored!r:.80})")
        attrs[key] = value
    for key in attrs:
        if key not in _KNOWN[cell]:
            raise ValueError(f"{where}: unknown attribute {key!r}")
    layout = attrs.get("layout", 0)
    if layout not in (0, 1):
        raise ValueError(f"{where}: attribute 'layout'={layout} is invalid (0 or 1)")
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else str(direction)
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"{where}: attribute 'direction'={direction!r} is invalid")
    D = 2 if direction == "bidirectional" else 1
    config = {}
    if "activations" in attrs:
        config["activations"] = _activations(cell, D, attrs, where)
    elif "activation_alpha" in attrs or "activation_beta" in attrs:
        pass  # the default Sigmoid / Tanh take no parameters: ONNX Runtime ignores the lists
    if "clip" in attrs:
        clip = float(attrs["clip"])
        if not clip > 0:
            raise ValueError(f"{where}: attribute 'clip'={clip} must be positive")
        config["clip"] = clip
    if attrs.get("input_forget", 0):
        config["input_forget"] = True
    reset_after = bool(attrs.get("linear_before_reset", 0)) if cell == "gru" else True
    get = lambda i, what: _node_input(n, i, scope, where, what)  # noqa: E731
    W, R, B = get(1, "W"), get(2, "R"), get(3, "B")
    if W is None or R is None:
        raise ValueError(f"{where}: W and R inputs are required")
    if W.ndim != 3 or W.shape[0] != D or W.shape[1] % G:
        raise ValueError(f"{where}: W has shape {W.shape}, expected [{D}, {G}*H, input_size]")
    H = W.shape[1] // G
    if "hidden_size" in attrs and attrs["hidden_size"] != H:
        raise ValueError(f"{where}: hidden_size={attrs['hidden_size']} but W implies {H}")
    if R.shape != (D, G * H, H):
        raise ValueError(f"{where}: R has shape {R.shape}, expected {(D, G * H, H)}")
    if B is not None and B.shape != (D, 2 * G * H):
        raise ValueError(f"{where}: B has shape {B.shape}, expected {(D, 2 * G * H)}")
    P = None
    if cell == "lstm":
        P = get(7, "P")
        if P is not None:
            if P.shape != (D, 3 * H):
                raise ValueError(f"{where}: P has shape {P.shape}, expected {(D, 3 * H)}")
            if not np.any(P):
                P = None  # all-zero peepholes: the plain cell
    _state_input(n, 5, scope, where, "initial_h")
    if cell == "lstm":
        _state_input(n, 6, scope, where, "initial_c")
    sd = {}
    for d in range(D):
        b_w = None if B is None else B[d, :G * H]
        b_r = None if B is None else B[d, G * H:]
        prefix = f"layer0.{DIRECTIONS[d]}"
        split_rows(cell, GATE_ORDER[cell], W[d], R[d], b_w, b_r, H, prefix, sd)
        if P is not None:
            for k, gate in enumerate(("input", "output", "forget")):  # ONNX P[iof]
                sd[f"{prefix}.{gate}.peephole"] = P[d, k * H:(k + 1) * H]
    if P is not None:
        config["peepholes"] = True
    config.update(bidirectional=D == 2, reverse=direction == "reverse", use_bias=B is not None)
    if cell == "gru":
        config["reset_after"] = reset_after
    return cell, W.shape[2], H, sd, config


def _layer(n, name, scope, dtype):
    cell, input_size, H, sd, config = _node_spec(n, name, scope)
    return build(cell, input_size, H, sd, dtype=dtype, name=name, **config)


# ---------------------------------------------------------------------------------------------
# fastrnn's own metadata: what the ONNX nodes cannot express

META_KEY = "fastrnn"            # metadata_props key; the value is JSON
META_FORMAT = "fastrnn-onnx"
META_VERSION = 1
_META_FIELDS = ("nodes", "name", "masked_output", "dropout", "recurrent_dropout", "trainable",
                "float64_attributes")
# Float attributes of the nodes, which ONNX stores as float32: their float64 values are kept in
# the metadata so that a float64 layer reloads with exactly its clip and activation parameters.
_FLOAT_ATTRIBUTES = ("clip", "activation_alpha", "activation_beta")
_MAX_NAME = 4096                # characters of a layer or node name in the metadata
_MAX_NODES = 4096               # nodes (stacked layers) of one fastrnn layer


def _layer_metadata(layer, node_names, node_attrs):
    """The metadata entry of one exported layer (see `to_onnx_model`)."""
    entry = {"nodes": list(node_names), "name": layer.name,
             "masked_output": layer.masked_output, "dropout": layer.dropout,
             "recurrent_dropout": layer.recurrent_dropout, "trainable": bool(layer.trainable)}
    exact = {k: node_attrs[k] for k in _FLOAT_ATTRIBUTES if k in node_attrs}
    if exact:
        entry["float64_attributes"] = exact
    return entry


def _finite_number(v):
    return not isinstance(v, bool) and isinstance(v, (int, float)) and np.isfinite(v)


def _check_entry(entry, where):
    """A metadata entry read back, validated field by field (the file is not trusted)."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not a JSON object")
    unknown = sorted(set(entry) - set(_META_FIELDS))
    if unknown:
        raise ValueError(f"{where} has unknown fields {unknown} (written by a newer fastrnn?)")
    nodes = entry.get("nodes")
    if not isinstance(nodes, list) or not 1 <= len(nodes) <= _MAX_NODES or not all(
            isinstance(v, str) and 0 < len(v) <= _MAX_NAME for v in nodes) \
            or len(set(nodes)) != len(nodes):
        raise ValueError(f"{where}: 'nodes' must be a list of 1 to {_MAX_NODES} distinct, "
                         "non-empty node names")
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME):
        raise ValueError(f"{where}: 'name' must be a non-empty string of at most {_MAX_NAME} "
                         f"characters or null, got {name!r:.80}")
    masked = entry.get("masked_output", "zero")
    if masked not in ("zero", "carry"):
        raise ValueError(f"{where}: 'masked_output' must be 'zero' or 'carry', got "
                         f"{masked!r:.80}")
    out = {"node_names": nodes, "name": name, "masked_output": masked}
    for what in ("dropout", "recurrent_dropout"):
        p = entry.get(what, 0.0)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"{where}: {what!r} must be a number in [0, 1), got {p!r:.80}")
        out[what] = float(p)
    trainable = entry.get("trainable", True)
    if not isinstance(trainable, bool):
        raise ValueError(f"{where}: 'trainable' must be true or false, got {trainable!r:.80}")
    out["trainable"] = trainable
    exact = entry.get("float64_attributes", {})
    if not isinstance(exact, dict) or not set(exact) <= set(_FLOAT_ATTRIBUTES) or not all(
            _finite_number(v) if k == "clip" else
            isinstance(v, list) and len(v) <= 64 and all(_finite_number(e) for e in v)
            for k, v in exact.items()):
        raise ValueError(f"{where}: 'float64_attributes' must map {list(_FLOAT_ATTRIBUTES)} to "
                         "finite numbers (clip) or lists of them")
    out["float64_attributes"] = exact
    return out


def _stacks(model, scope, label):
    """graph index of a node -> its layer's validated metadata entry (with "nodes", the node protos, and
    "key", the layer's name in from_onnx's dict), for the layers fastrnn wrote; {} for a model
    without fastrnn metadata."""
    import json
    entries = [p for p in model.metadata_props if _text(p.key) == META_KEY]
    if not entries:
        return {}
    where = f"{label}: metadata {META_KEY!r}"
    if len(entries) > 1:
        raise ValueError(f"{where} appears {len(entries)} times")
    try:
        meta = json.loads(_text(entries[0].value))
    except ValueError as exc:
        raise ValueError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise ValueError(f"{where} does not describe {META_FORMAT!r} layers")
    if meta.get("version") != META_VERSION:
        raise ValueError(f"{where}: version {meta.get('version')!r:.40} is not supported (this "
                         f"fastrnn reads version {META_VERSION})")
    entries = meta.get("layers")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: 'layers' must be a non-empty list")
    by_name = {}
    for i, n in enumerate(scope.graph.node):
        if n.op_type in ("LSTM", "GRU") and n.domain in ("", "ai.onnx"):
            by_name.setdefault(_text(n.name), []).append((i, n))
    groups, keys = {}, set()
    for k, entry in enumerate(entries):
        at = f"{where}, layer {k}"
        group = _check_entry(entry, at)
        nodes = []
        for node_name in group["node_names"]:
            found = by_name.get(node_name, [])
            if len(found) != 1 or found[0][0] in groups:
                raise ValueError(f"{at}: {node_name!r} is not the name of exactly one LSTM / "
                                 "GRU node of the main graph (and of no other layer)")
            index, n = found[0]
            nodes.append(n)
            groups[index] = group
        group["nodes"] = nodes
        group["first"] = min(groups_index for groups_index, g in groups.items() if g is group)
        group["key"] = group["name"] if group["name"] is not None else group["node_names"][0]
        group["where"] = at
        if group["key"] in keys:
            raise ValueError(f"{at}: the layer name {group['key']!r} is used twice")
        keys.add(group["key"])
        _check_chain(nodes, scope, at)
    for i, n in enumerate(scope.graph.node):
        tag = _text(n.name) or f"{_text(n.op_type)}_{i}"
        if i not in groups and tag in keys and n.op_type in ("LSTM", "GRU") \
                and n.domain in ("", "ai.onnx"):
            raise ValueError(f"{where}: the layer name {tag!r} is also the name of another "
                             "LSTM / GRU node")
    return groups


def _check_chain(nodes, scope, where):
    """The nodes of one stacked layer must be wired as fastrnn writes them: node k+1 reads
    Reshape(Transpose(Y of node k, perm=[0, 2, 1, 3]), [0, 0, -1]) and every node the same
    sequence_lens; anything else would compute something other than the stacked layer."""
    if len(nodes) == 1:
        return
    names = [_text(n.name) for n in nodes]
    seq = [n.input[4] if len(n.input) > 4 else "" for n in nodes]
    if len(set(seq)) != 1:
        raise ValueError(f"{where}: the nodes {names} do not share one sequence_lens input")
    for n, name in zip(nodes, names):
        if _attrs(n).get("layout", 0) != 0:
            raise ValueError(f"{where}: node {name!r} of a stacked layer has layout != 0")
    for k in range(1, len(nodes)):
        prev, cur = nodes[k - 1], nodes[k]
        bad = ValueError(f"{where}: node {names[k]!r} does not read node {names[k - 1]!r}'s Y "
                         "through Transpose(perm=[0, 2, 1, 3]) and Reshape([0, 0, -1])")
        reshape = scope.producer.get(cur.input[0] if cur.input else "", (None,))[0]
        if reshape is None or reshape.op_type != "Reshape" or reshape.domain not in ("", "ai.onnx") \
                or len(reshape.input) < 2 or _attrs(reshape).get("allowzero", 0):
            raise bad
        transpose = scope.producer.get(reshape.input[0], (None,))[0]
        if transpose is None or transpose.op_type != "Transpose" \
                or transpose.domain not in ("", "ai.onnx") \
                or list(_attrs(transpose).get("perm", [])) != [0, 2, 1, 3] \
                or not prev.output or not prev.output[0] \
                or list(transpose.input) != [prev.output[0]]:
            raise bad
        try:
            shape = _ints(scope.value(reshape.input[1]))
        except _NotConstant:
            raise bad from None
        if shape != [0, 0, -1]:
            raise bad


def _group_layer(group, scope, dtype):
    """One stacked fastrnn layer from the chain of nodes of a metadata entry."""
    where, nodes = group["where"], group["nodes"]
    specs = [_node_spec(n, _text(n.name), scope, group["float64_attributes"], where)
             for n in nodes]
    cell, input_size, H, _, first = specs[0]
    D = 2 if first["bidirectional"] else 1
    peepholes = any(spec[4].get("peepholes") for spec in specs)
    same = {k: v for k, v in first.items() if k != "peepholes"}
    sd = {}
    for k, (cell_k, input_k, H_k, sd_k, config_k) in enumerate(specs):
        node = _text(nodes[k].name)
        if cell_k != cell or H_k != H or \
                {key: v for key, v in config_k.items() if key != "peepholes"} != same:
            raise ValueError(f"{where}: node {node!r} differs from node "
                             f"{_text(nodes[0].name)!r} in its cell, hidden size or settings; "
                             "the nodes of one stacked layer share them")
        if k and input_k != D * H:
            raise ValueError(f"{where}: node {node!r} takes {input_k} features, the node "
                             f"before it gives {D * H}")
        for key, value in sd_k.items():
            sd[f"layer{k}" + key[len("layer0"):]] = value
        if peepholes and not config_k.get("peepholes"):  # an all-zero P was left out
            for d in DIRECTIONS[:D]:
                for gate in ("input", "forget", "output"):
                    sd[f"layer{k}.{d}.{gate}.peephole"] = np.zeros(H, sd_k[
                        f"layer0.{d}.{GATE_ORDER[cell][0]}.kernel"].dtype)
    config = dict(same, peepholes=True) if peepholes else same
    layer = build(cell, input_size, H, sd, dtype=dtype, num_layers=len(nodes),
                  name=group["name"], masked_output=group["masked_output"],
                  dropout=group["dropout"], recurrent_dropout=group["recurrent_dropout"],
                  **config)
    layer.trainable = group["trainable"]
    return layer


# ---------------------------------------------------------------------------------------------
# LSTMCell / GRUCell written as primitive ops

_VIEW_OPS = {"Gather", "Slice", "Squeeze", "Unsqueeze", "Reshape", "Identity", "Split",
             "Flatten"}


class _Cells:
    """Dataflow queries over one graph for the cell matchers."""

    def __init__(self, scope):
        self.scope = scope
        self.graph = scope.graph

    def node(self, name):
        hit = self.scope.producer.get(name)
        return None if hit is None or hit[0].domain not in ("", "ai.onnx") else hit[0]

    def users(self, name, op=None):
        return [u for u in self.scope.consumers.get(name, ())
                if (op is None or u.op_type == op) and u.domain in ("", "ai.onnx")]

    def const(self, name):
        try:
            return self.scope.value(name)
        except _NotConstant:
            return None

    def other(self, n, name):
        """The other operand of a binary node that has `name` as one operand."""
        ins = list(n.input)
        if len(ins) != 2 or name not in ins:
            return None
        return ins[1] if ins[0] == name and ins[1] != name else \
            ins[0] if ins[1] == name else None

    def linear(self, name):
        """(runtime input, W rows [N, in], bias or None) of Gemm / MatMul over a constant."""
        n = self.node(name)
        if n is None:
            return None
        if n.op_type == "Gemm" and len(n.input) >= 2:
            a = _attrs(n)
            if a.get("transA", 0) or self.const(n.input[0]) is not None:
                return None
            Bm = self.const(n.input[1])
            if Bm is None or Bm.ndim != 2:
                return None
            W = (Bm if a.get("transB", 0) else Bm.T) * np.asarray(a.get("alpha", 1.0),
                                                                    Bm.dtype)
            bias = None
            if len(n.input) > 2 and n.input[2]:
                C = self.const(n.input[2])
                if C is None:
                    return None
                bias = C * np.asarray(a.get("beta", 1.0), C.dtype)
            return n.input[0], W, bias, "Gemm"
        if n.op_type == "MatMul":
            if self.const(n.input[0]) is not None:
                return None
            Bm = self.const(n.input[1])
            if Bm is None or Bm.ndim != 2:
                return None
            return n.input[0], Bm.T, None, "MatMul"
        return None

    def terms(self, name, depth=0):
        """A sum (Add / Sum tree) -> [("linear", x, W, bias) | ("const", value)] or None."""
        if depth > 16:
            return None
        c = self.const(name)
        if c is not None:
            return [("const", c)]
        lin = self.linear(name)
        if lin is not None:
            return [("linear",) + lin]
        n = self.node(name)
        if n is None or n.op_type not in ("Add", "Sum"):
            return None
        out = []
        for i in n.input:
            sub = self.terms(i, depth + 1) if i else None
            if sub is None:
                return None
            out += sub
        return out

    def affine(self, name, gates):
        """(x, W [G*H, in], summed bias [G*H] or None) of a sum with exactly one linear term."""
        terms = self.terms(name)
        if terms is None:
            return None
        lins = [t for t in terms if t[0] == "linear"]
        if len(lins) != 1:
            return None
        return self._with_bias(lins, terms, gates)

    def _with_bias(self, lins, terms, gates):
        rows = lins[0][2].shape[0]
        if rows % gates or any(t[2].shape[0] != rows for t in lins):
            return None
        bias = None
        for b in [t[3] for t in lins if t[3] is not None] + \
                 [t[1] for t in terms if t[0] == "const"]:
            b = np.asarray(b, np.float64)
            if b.size not in (1, rows) or (b.ndim == 2 and b.shape[0] != 1) or b.ndim > 2:
                return None
            b = np.broadcast_to(b.reshape(-1), (rows,))
            bias = b if bias is None else bias + b
        return lins, bias

    def split_parts(self, s, parts):
        """The equal parts of a Split along the last (feature) axis, or None."""
        outs = list(s.output)
        if len(outs) != parts or not all(outs):
            return None
        a = _attrs(s)
        sizes = a.get("split")
        if len(s.input) > 1 and s.input[1]:
            sizes = self.const(s.input[1])
            if sizes is None:
                return None
        if sizes is not None and len(set(_ints(sizes))) != 1:
            return None
        return int(a.get("axis", 0)), outs

    def root(self, name):
        """The tensor a value is a view of (through Gather / Slice / Squeeze / ...)."""
        for _ in range(32):
            n = self.node(name)
            if n is None or n.op_type not in _VIEW_OPS or not n.input:
                return name
            name = n.input[0]
        return name

    def only(self, nodes):
        return nodes[0] if len(nodes) == 1 else None


def _collect_cells(scope, prefix, dtype, layers):
    q = _Cells(scope)
    counts = {"lstm": 0, "gru": 0}
    splits = [n for n in scope.graph.node if n.op_type == "Split" and n.domain in ("", "ai.onnx")]
    for s in splits:
        hit = _match_lstm_cell(q, s)
        if hit is not None:
            name = f"{prefix}LSTMCell_{counts['lstm']}"
            counts["lstm"] += 1
            layers[name] = _cell_layer("lstm", hit, name, dtype)
    three = [s for s in splits if q.split_parts(s, 3) is not None]
    used = set()
    for gi in three:
        for gh in three:
            if gi is gh or id(gi) in used or id(gh) in used:
                continue
            hit = _match_gru_cell(q, gi, gh)
            if hit is not None:
                used.update((id(gi), id(gh)))
                name = f"{prefix}GRUCell_{counts['gru']}"
                counts["gru"] += 1
                layers[name] = _cell_layer("gru", hit, name, dtype)


def _axis_ok(axis, lins):
    """The split runs along the gate axis: the last one, or axis 1 of a Gemm's 2-D output."""
    return axis == -1 or (axis == 1 and all(t[4] == "Gemm" for t in lins))


def _match_lstm_cell(q, s):
    got = q.split_parts(s, 4)
    if got is None:
        return None
    axis, parts = got
    terms = q.terms(s.input[0])
    if terms is None:
        return None
    lins = [t for t in terms if t[0] == "linear"]
    if len(lins) != 2:
        return None
    if not _axis_ok(axis, lins):
        return None
    wb = q._with_bias(lins, terms, 4)
    if wb is None:
        return None
    acts = []
    for p in parts:
        users = q.users(p)
        if len(users) != 1 or users[0].op_type not in ("Sigmoid", "Tanh"):
            return None
        acts.append((users[0].op_type, users[0].output[0]))
    tanh = [k for k, (op, _) in enumerate(acts) if op == "Tanh"]
    if len(tanh) != 1:
        return None
    g = tanh[0]
    sig = {acts[k][1]: k for k in range(4) if k != g}
    ig = None
    for m in q.users(acts[g][1], "Mul"):
        o = q.other(m, acts[g][1])
        if o in sig:
            ig = (sig[o], m)
    if ig is None:
        return None
    i, mul_ig = ig
    found = None
    for add in q.users(mul_ig.output[0], "Add"):
        o = q.other(add, mul_ig.output[0])
        mf = q.node(o) if o else None
        if mf is None or mf.op_type != "Mul":
            continue
        for a_name in mf.input:
            if a_name in sig and sig[a_name] != i:
                c_prev = q.other(mf, a_name)
                if c_prev is not None and c_prev not in sig:
                    found = (sig[a_name], c_prev, add.output[0])
    if found is None:
        return None
    f, c_prev, c_new = found
    o_idx = ({0, 1, 2, 3} - {g, i, f}).pop()
    h_new = None
    for t in q.users(c_new, "Tanh"):
        for m in q.users(t.output[0], "Mul"):
            if q.other(m, t.output[0]) == acts[o_idx][1]:
                h_new = m.output[0]
    if h_new is None:
        return None
    (_, x0, W0, _), (_, x1, W1, _) = lins[0][:4], lins[1][:4]
    rows = W0.shape[0]
    H = rows // 4
    if W0.shape[1] != W1.shape[1]:
        if H not in (W0.shape[1], W1.shape[1]):
            return None
        rec = 0 if W0.shape[1] == H else 1
    elif W0.shape[1] != H:
        return None
    else:
        shared = [q.root(x) == q.root(c_prev) for x in (x0, x1)]
        rec = shared.index(True) if shared.count(True) == 1 else 0
    x_term, h_term = lins[1 - rec], lins[rec]
    gates = [None] * 4
    for k, gate in ((i, "input"), (f, "forget"), (g, "cell"), (o_idx, "output")):
        gates[k] = gate
    return dict(order=tuple(gates), W=x_term[2], R=h_term[2], b_w=wb[1], b_r=None, H=H,
                reset_after=True)


def _match_gru_cell(q, s_x, s_h):
    gx, gh = q.split_parts(s_x, 3), q.split_parts(s_h, 3)
    if gx is None or gh is None:
        return None
    ax, ah = q.affine(s_x.input[0], 3), q.affine(s_h.input[0], 3)
    if ax is None or ah is None or not _axis_ok(gx[0], ax[0]) or not _axis_ok(gh[0], ah[0]):
        return None
    px, ph = gx[1], gh[1]
    sigmoid = {}
    for k in range(3):
        for add in q.users(px[k], "Add"):
            if q.other(add, px[k]) == ph[k]:
                sg = q.only(q.users(add.output[0], "Sigmoid"))
                if sg is not None:
                    sigmoid[k] = sg.output[0]
    if len(sigmoid) != 2:
        return None
    m = ({0, 1, 2} - set(sigmoid)).pop()
    r = n_out = None
    for mul in q.users(ph[m], "Mul"):
        o = q.other(mul, ph[m])
        if o in sigmoid.values():
            for add in q.users(mul.output[0], "Add"):
                if q.other(add, mul.output[0]) == px[m]:
                    t = q.only(q.users(add.output[0], "Tanh"))
                    if t is not None:
                        r, n_out = o, t.output[0]
    if r is None:
        return None
    r_idx = [k for k, v in sigmoid.items() if v == r][0]
    z_idx = [k for k in sigmoid if k != r_idx][0]
    z = sigmoid[z_idx]
    h_prev = ah[0][0][1]
    if not _gru_update(q, h_prev, z, n_out):
        return None
    (_, x, Wx, _), (_, h, Wh, _) = ax[0][0][:4], ah[0][0][:4]
    H = Wx.shape[0] // 3
    if Wh.shape != (3 * H, H):
        return None
    gates = [None] * 3
    for k, gate in ((z_idx, "update"), (r_idx, "reset"), (m, "candidate")):
        gates[k] = gate
    return dict(order=tuple(gates), W=Wx, R=Wh, b_w=ax[1], b_r=ah[1], H=H, reset_after=True)


def _gru_update(q, h_prev, z, n):
    """h = n + z * (h_prev - n), or z * h_prev + (1 - z) * n (operands in either order)."""
    for sub in q.users(n, "Sub"):
        if list(sub.input) == [h_prev, n]:
            for mul in q.users(sub.output[0], "Mul"):
                if q.other(mul, sub.output[0]) == z:
                    if any(q.other(a, mul.output[0]) == n for a in q.users(mul.output[0], "Add")):
                        return True
    for mzh in q.users(z, "Mul"):
        if q.other(mzh, z) != h_prev:
            continue
        for sub in q.users(z, "Sub"):
            one = q.const(sub.input[0]) if sub.input[1] == z else None
            if one is None or not np.all(np.asarray(one) == 1):
                continue
            for mn in q.users(sub.output[0], "Mul"):
                if q.other(mn, sub.output[0]) != n:
                    continue
                for add in q.users(mn.output[0], "Add"):
                    if q.other(add, mn.output[0]) == mzh.output[0]:
                        return True
    return False


def _cell_layer(cell, hit, name, dtype):
    H, sd = hit["H"], {}
    split_rows(cell, hit["order"], hit["W"], hit["R"], hit["b_w"], hit["b_r"], H,
               "layer0.forward", sd)
    use_bias = hit["b_w"] is not None or hit["b_r"] is not None
    if dtype is None:
        dtype = np.float64 if hit["W"].dtype == np.float64 else np.float32
    return build(cell, hit["W"].shape[1], H, sd, dtype=dtype, use_bias=use_bias,
                 reset_after=hit["reset_after"], name=name)
# ---------------------------------------------------------------------------------------------
# Export

def to_onnx_model(layer, *, sequence_lens=False, initial_state=False, opset=OPSET):
    """An ONNX model (onnx.ModelProto) computing `layer`: one LSTM / GRU node per stacked
    layer, chained by Transpose + Reshape (Y [T, D, B, H] -> the next X [T, B, D*H]).

    Args:
        layer: a fastrnn.LSTM / fastrnn.GRU (any num_layers, direction, bias, dtype).
        sequence_lens (bool): add the input `sequence_lens` [batch] int32 (every node reads
            it); it equals fastrnn's `lengths`.
        initial_state (bool): add `initial_h` (and `initial_c` for LSTM) [layers*directions,
            batch, hidden] in fastrnn / PyTorch order.
        opset (int): the default-domain opset to declare (17 by default).

    Inputs are sequence-first (ONNX's layout=0): `X` [time, batch, input_size]. Outputs: `Y`
    [time, batch, directions*hidden] and `Y_h` (and `Y_c`) [layers*directions, batch,
    hidden], the stack's final states (the per-node states concatenated along axis 0).
    With onnxruntime, `sess.run(None, {"X": x.transpose(1, 0, 2)})[0].transpose(1, 0, 2)`
    equals `layer(x)[0]`.

    What ONNX expresses is written as ONNX: direction (forward / reverse / bidirectional),
    GRU `linear_before_reset` (reset_after), a missing B for use_bias=False, the element
    type, cell variants as node attributes (`activations` with every alpha / beta written
    explicitly, in the order ONNX Runtime consumes them; `clip`; `input_forget`) and the
    peephole input P. The node is named after the layer (`name`, or `name.layer{k}` in a
    stack; `lstm_{k}` / `gru_{k}` without a name) and so is the graph. What ONNX has no place
    for is kept in the model's metadata_props under the key "fastrnn" (JSON: which nodes form
    one layer, name, masked_output, dropout, recurrent_dropout, trainable), which
    `from_onnx` reads back, so that the file reloads as the same single (stacked) layer.

    Errors and warnings: cell_clip and projections have no ONNX form (ValueError). A layer
    with masked_output="carry" exported with sequence_lens=True gives a UserWarning: ONNX
    Runtime (as the ONNX operators define) outputs zeros in Y at the steps past
    sequence_lens where the layer repeats the last valid output; Y_h / Y_c are the same.

    Example:
        >>> import fastrnn
        >>> from fastrnn.io.onnx import to_onnx_model, from_onnx
        >>> lstm = fastrnn.LSTM(8, 16, num_layers=2, bidirectional=True, name="enc")
        >>> model = to_onnx_model(lstm, sequence_lens=True)
        >>> from_onnx(model).num_layers, from_onnx(model).name
        (2, 'enc')
    """
    onnx = _onnx()
    import json
    import warnings

    from onnx import TensorProto, helper, numpy_helper
    variant_attrs = _variant_attributes(layer)
    if sequence_lens and layer.masked_output == "carry":
        warnings.warn(
            f"{layer!r} has masked_output='carry' and the ONNX model gets sequence_lens: ONNX "
            "Runtime (following the ONNX LSTM / GRU operators) outputs zeros in Y at the steps "
            "past sequence_lens, where this layer repeats the last valid output (Y_h / Y_c are "
            "the same). fastrnn.io.onnx.from_onnx reads masked_output='carry' back from the "
            "model's metadata.", UserWarning, stacklevel=2)
    cell, D, H, L = layer._cell, layer.num_directions, layer.hidden_size, layer.num_layers
    elem = TensorProto.DOUBLE if layer.dtype == np.float64 else TensorProto.FLOAT
    direction = "bidirectional" if D == 2 else "reverse" if layer.reverse else "forward"
    op = "LSTM" if cell == "lstm" else "GRU"
    if layer.name is not None and not isinstance(layer.name, str):
        raise ValueError(f"the layer name must be a string to be written to ONNX, got "
                         f"{type(layer.name).__name__}")
    if layer.name is not None and not 0 < len(layer.name) <= _MAX_NAME:
        raise ValueError(f"an ONNX node name of fastrnn must have 1 to {_MAX_NAME} characters; "
                         f"the layer name has {len(layer.name)}")
    if layer.name is None:
        node_names = [f"{op.lower()}_{k}" for k in range(L)]
    elif L == 1:
        node_names = [layer.name]
    else:
        node_names = [f"{layer.name}.layer{k}" for k in range(L)]
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
        peep = None
        if getattr(layer, "peepholes", False):  # ONNX P[iof]
            peep = np.stack([np.concatenate([layer.gate(g, k, d).peephole
                                             for g in ("input", "output", "forget")])
                             for d in DIRECTIONS[:D]]).astype(layer.dtype)
            inits.append(numpy_helper.from_array(peep, f"P_{k}"))
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
        if peep is not None:
            node_inputs += [""] * (7 - len(node_inputs)) + [f"P_{k}"]
        while node_inputs and node_inputs[-1] == "":
            node_inputs.pop()
        outs = [f"Y_raw_{k}"] + [f"Y_{s}_{k}" if L > 1 else f"Y_{s}" for s in state_names]
        attrs = dict(hidden_size=H, direction=direction)
        if cell == "gru":
            attrs["linear_before_reset"] = int(layer.reset_after)
        attrs.update(variant_attrs)
        nodes.append(helper.make_node(op, node_inputs, outs, name=node_names[k], **attrs))
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
    meta = {"format": META_FORMAT, "version": META_VERSION,
            "layers": [_layer_metadata(layer, node_names, variant_attrs)]}
    helper.set_model_props(model, {META_KEY: json.dumps(meta)})
    onnx.checker.check_model(model)
    return model


# fastrnn activation -> (ONNX name, alpha, beta) as the ONNX node spells it
_TO_ONNX = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "softsign": "Softsign",
            "softplus": "Softplus", "hard_sigmoid": "HardSigmoid", "elu": "Elu",
            "leaky_relu": "LeakyRelu", "thresholded_relu": "ThresholdedRelu",
            "scaled_tanh": "ScaledTanh", "affine": "Affine", "linear": "Affine"}


def _variant_attributes(layer):
    """The node attributes of a layer's cell variant; refuses what ONNX cannot hold."""
    for feature in ("cell_clip", "proj_size", "proj_clip"):
        if getattr(layer, feature, None):
            raise ValueError(f"ONNX LSTM has no {feature}: this layer cannot be exported to "
                             "ONNX")
    attrs = {}
    features = getattr(layer, "variant_features", ())
    if "activations" in features:
        names, alphas, betas = [], [], []
        for direction in layer.activations:
            for name, alpha, beta in direction:
                if name == "linear":
                    name, alpha, beta = "affine", 1.0, 0.0
                onnx_name = _TO_ONNX.get(name)
                if onnx_name is None:
                    raise ValueError(f"activations: ONNX has no activation {name!r}")
                takes_a, takes_b = _TAKES[onnx_name.lower()]
                names.append(onnx_name)
                if takes_a:  # written explicitly, in the order ONNX Runtime consumes them
                    alphas.append(float(alpha))
                if takes_b:
                    betas.append(float(beta))
        attrs["activations"] = names
        if alphas:
            attrs["activation_alpha"] = alphas
        if betas:
            attrs["activation_beta"] = betas
    if getattr(layer, "clip", None) is not None:
        attrs["clip"] = float(layer.clip)
    if getattr(layer, "input_forget", False):
        attrs["input_forget"] = 1
    return attrs


def save_onnx(layer, path, *, sequence_lens=False, initial_state=False, opset=OPSET):
    """Write `to_onnx_model(layer, ...)` to `path` (the keywords are that function's).

    Example:
        >>> from fastrnn.io.onnx import save_onnx
        >>> save_onnx(fastrnn.GRU(8, 16, num_layers=2, name="g"), "g.onnx", sequence_lens=True)
    """
    onnx = _onnx()
    model = to_onnx_model(layer, sequence_lens=sequence_lens, initial_state=initial_state,
                          opset=opset)
    onnx.save(model, path)


# ---------------------------------------------------------------------------------------------
# Every weight of a model

def all_weights(source):
    """Every constant tensor of an ONNX model (path, bytes or onnx.ModelProto) as numpy arrays:
    the initializers (dense and sparse, the latter made dense) and the values of `Constant`
    nodes, for the weights around the recurrent layers (a Gemm head, an embedding, ...).

    Returns a dict name -> np.ndarray in graph order. Tensors of the main graph are named as
    the model names them; those of subgraphs (If / Loop / Scan bodies) get the path prefix
    `from_onnx` uses for nodes, e.g. `If_0.then_branch/W`. String tensors are left out.
    Raises ValueError for a tensor stored in external data (load the model with
    `onnx.load(path)` and pass the ModelProto) or one that cannot be read.

    Example:
        >>> import fastrnn
        >>> from fastrnn.io.onnx import all_weights, to_onnx_model
        >>> sorted(all_weights(to_onnx_model(fastrnn.GRU(3, 4))))
        ['B_0', 'R_0', 'W_0', 'flat_shape']
    """
    model, label = _model(source)
    out = {}
    _graph_tensors(model.graph, "", label, out)
    return out


def _tensor_array(t, label, where):
    from onnx import TensorProto, numpy_helper
    if t.data_location == TensorProto.EXTERNAL:
        raise ValueError(f"{label}: tensor {where!r} is stored in external data; load the model "
                         "with onnx.load(path) and pass the ModelProto")
    if t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return None
    try:
        return numpy_helper.to_array(t)
    except Exception as exc:  # malformed tensor: wrong sizes, unknown type
        raise ValueError(f"{label}: tensor {where!r} cannot be read ({exc})") from exc


def _sparse_array(sp, label, where):
    values = _tensor_array(sp.values, label, where)
    indices = _tensor_array(sp.indices, label, where)
    if values is None or indices is None:
        return None
    dims = [int(d) for d in sp.dims]
    try:
        _check_size(dims, where)
        dense = np.zeros(dims, values.dtype)
        idx = indices.astype(np.int64)
        if idx.ndim == 1:
            dense.reshape(-1)[idx] = values.reshape(-1)
        else:
            dense[tuple(idx.T)] = values.reshape(-1)
    except (_NotConstant, ValueError, IndexError) as exc:
        raise ValueError(f"{label}: sparse tensor {where!r} cannot be read ({exc})") from None
    return dense


def _graph_tensors(graph, prefix, label, out):
    from onnx import helper
    for t in graph.initializer:
        name = prefix + _text(t.name)
        value = _tensor_array(t, label, name)
        if value is not None:
            out[name] = value
    for sp in graph.sparse_initializer:
        name = prefix + _text(sp.values.name)
        value = _sparse_array(sp, label, name)
        if value is not None:
            out[name] = value
    for i, n in enumerate(graph.node):
        tag = _text(n.name) or f"{_text(n.op_type)}_{i}"
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and n.output \
                and n.output[0]:
            name = prefix + _text(n.output[0])
            for a in n.attribute:
                value = None
                if a.name == "value":
                    value = _tensor_array(a.t, label, name)
                elif a.name == "sparse_value":
                    value = _sparse_array(a.sparse_tensor, label, name)
                elif a.name in ("value_float", "value_floats"):
                    value = np.array(helper.get_attribute_value(a), np.float32)
                elif a.name in ("value_int", "value_ints"):
                    value = np.array(helper.get_attribute_value(a), np.int64)
                if value is not None:
                    out[name] = value
        for attr in n.attribute:
            subs = [attr.g] if attr.HasField("g") else list(attr.graphs)
            for k, sub in enumerate(subs):
                where = _text(attr.name) if len(subs) == 1 else f"{_text(attr.name)}[{k}]"
                _graph_tensors(sub, f"{prefix}{tag}.{where}/", label, out)
