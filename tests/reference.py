"""Plain-numpy reference implementation of fastrnn's forward pass: the test oracle.

Written for clarity, not speed, and independent of the ``fastrnn`` package (nothing is imported
from it). Everything is computed in float64 with exact math (``np.tanh`` and a numerically stable
logistic sigmoid). Rows of the batch are handled one at a time and time steps one at a time, so
every masking rule of ``docs/api.md`` appears literally in the code.

Semantics (``docs/api.md``):

* Canonical row-vector equations, per layer and direction ("Weights by gate name")::

      LSTM (gates input/forget/cell/output):
          pre_g = x_t @ kernel_g + h @ recurrent_g + bias_g
          i, f, o = sigmoid(pre_i), sigmoid(pre_f), sigmoid(pre_o);  g = tanh(pre_cell)
          c' = f * c + i * g;  h' = o * tanh(c')
      GRU (gates update/reset/candidate):
          z = sigmoid(x_t @ kernel_z + h @ recurrent_z + bias_z + recurrent_bias_z)   (r alike)
          reset_after=True:  n = tanh(x_t @ kernel_c + bias_c + r * (h @ recurrent_c + recurrent_bias_c))
          reset_after=False: n = tanh(x_t @ kernel_c + bias_c + recurrent_bias_c + (r * h) @ recurrent_c)
          h' = z * h + (1 - z) * n

* A masked step leaves the state (h and c) unchanged and never reads its input. Its output is 0
  (``masked_output="zero"``) or a copy of the output of the step processed just before it, 0
  before the first processed valid step (``masked_output="carry"``). For a direction that runs
  backwards in time "just before" is the next later time step.
* The forward direction processes t = 0 .. T-1. The backward direction of a bidirectional layer,
  and a unidirectional layer with ``reverse=True``, process t = T-1 .. 0 skipping masked steps,
  i.e. each row's valid steps from last to first, starting from the initial state. Outputs are
  stored in original time order; a bidirectional output is ``[forward | backward]``.
* Layer k > 0 takes the previous layer's full output ``(B, T, dirs*H)``; every layer uses the same
  mask.
* The final state of each direction is the state after the last step it processed; a row with no
  valid step keeps its initial state.

Parameter keys follow ``fastrnn``'s state_dict:
``"layer{k}.{forward|backward}.{gate}.{kernel|recurrent|bias|recurrent_bias}"``. Missing ``bias`` /
``recurrent_bias`` keys mean zeros. A unidirectional layer (``reverse`` or not) uses the
``forward`` keys; for ``reverse=True`` the ``backward`` keys are accepted when no ``forward`` key of
that layer exists.

Cell variants (``docs/variants.md``), all optional; with none given the computation is exactly the
plain one above (same operations, same order, same bits)::

    LSTM:  i = act_f(clip(pre_i + p_i * c))        f = act_f(clip(pre_f + p_f * c))
           input_forget: f = 1 - i                  g = act_g(clip(pre_cell))
           c' = f * c + i * g;  cell_clip: c' = min(max(c', -cell_clip), cell_clip)
           o = act_f(clip(pre_o + p_o * c'))        h' = o * act_h(c')
    GRU:   z = act_f(clip(pre_z)), r alike;  n = act_g(clip(<the plain candidate argument>))
           h' = z * h + (1 - z) * n

``clip(v)`` is ``min(max(v, -clip), clip)`` (identity for ``clip=None``); ``p_*`` are the peephole
vectors ``layer{k}.{dir}.{input|forget|output}.peephole`` (H,), required when ``peepholes=True``.
Activations are given as Keras' ``activation`` (slots g and h) / ``recurrent_activation`` (slot f)
or as ONNX's ``activations`` list (``[f, g, h]`` LSTM, ``[f, g]`` GRU, once or once per
direction); see ``normalize_activations``. Every function of the table is written out below in
float64 (``ACTIVATIONS``).
"""

import numpy as np

__all__ = ["rnn_forward", "lengths_to_mask", "sigmoid", "GATES", "ACTIVATIONS",
           "apply_activation", "normalize_activation", "normalize_activations"]

GATES = {
    "lstm": ("input", "forget", "cell", "output"),
    "gru": ("update", "reset", "candidate"),
}

_MASKED_OUTPUT_MODES = ("zero", "carry")


def sigmoid(x):
    """Logistic function 1 / (1 + exp(-x)) in float64, without overflow for any finite x."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    nonneg = x >= 0
    # x >= 0: exp(-x) is in (0, 1].
    out[nonneg] = 1.0 / (1.0 + np.exp(-x[nonneg]))
    # x < 0: rewrite as exp(x) / (1 + exp(x)); exp(x) is in (0, 1).
    ex = np.exp(x[~nonneg])
    out[~nonneg] = ex / (1.0 + ex)
    return out


def lengths_to_mask(lengths, T):
    """(B,) integer lengths -> (B, T) bool mask, True for t < lengths[b] (right padding)."""
    lengths = np.asarray(lengths)
    assert lengths.ndim == 1, "lengths must be 1-D"
    assert np.all(lengths >= 0) and np.all(lengths <= T), "need 0 <= lengths[b] <= T"
    mask = np.zeros((lengths.shape[0], T), dtype=bool)
    for b in range(lengths.shape[0]):
        mask[b, : int(lengths[b])] = True
    return mask


# --------------------------------------------------------------------------------------------
# Activations (docs/variants.md, "Activations"), each written out literally in float64


def _hard_sigmoid(x, alpha, beta):
    return np.minimum(np.maximum(alpha * x + beta, 0.0), 1.0)


def _softplus(x, alpha, beta):
    # log(1 + exp(x)) without overflow: log(exp(0) + exp(x))
    return np.logaddexp(0.0, x)


def _elu(x, alpha, beta):
    return np.where(x > 0, x, alpha * (np.exp(np.minimum(x, 0.0)) - 1.0))


ACTIVATIONS = {
    # name: (function(x, alpha, beta), default alpha, default beta); None = takes no parameter
    "sigmoid": (lambda x, a, b: sigmoid(x), None, None),
    "tanh": (lambda x, a, b: np.tanh(x), None, None),
    "relu": (lambda x, a, b: np.maximum(x, 0.0), None, None),
    "linear": (lambda x, a, b: x, None, None),
    # alpha of the bare name "hard_sigmoid" comes from hard_sigmoid= ("keras3" or "keras2")
    "hard_sigmoid": (_hard_sigmoid, "by hard_sigmoid=", 0.5),
    "softsign": (lambda x, a, b: x / (1.0 + np.abs(x)), None, None),
    "softplus": (_softplus, None, None),
    "elu": (_elu, 1.0, None),
    "leaky_relu": (lambda x, a, b: np.where(x >= 0, x, a * x), 0.01, None),
    "thresholded_relu": (lambda x, a, b: np.where(x > a, x, 0.0), 1.0, None),
    "scaled_tanh": (lambda x, a, b: a * np.tanh(b * x), 1.0, 1.0),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
}
# Keras 3: relu6(x + 3) / 6 = clip(x / 6 + 0.5, 0, 1); Keras 2 (tf.keras 2.x): clip(0.2 x + 0.5, 0, 1)
HARD_SIGMOID_ALPHA = {"keras3": 1.0 / 6.0, "keras2": 0.2}
# ONNX spellings: "HardSigmoid", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", ... (any case)
_BY_SQUASHED_NAME = {name.replace("_", ""): name for name in ACTIVATIONS}
_SLOTS = {"lstm": 3, "gru": 2}
PLAIN_ACTIVATIONS = {"lstm": ("sigmoid", "tanh", "tanh"), "gru": ("sigmoid", "tanh")}


def normalize_activation(spec, hard_sigmoid="keras3"):
    """A name or a (name[, alpha[, beta]]) tuple -> (canonical name, alpha, beta).

    Missing (or None) alpha / beta take the table's defaults; alpha / beta stay None for a
    function that has no such parameter, and giving one there is an error."""
    assert hard_sigmoid in HARD_SIGMOID_ALPHA, f"hard_sigmoid must be 'keras3' or 'keras2'"
    if isinstance(spec, str):
        raw, given = spec, ()
    else:
        assert isinstance(spec, (tuple, list)) and 1 <= len(spec) <= 3 \
            and isinstance(spec[0], str), f"bad activation {spec!r}"
        raw, given = spec[0], tuple(spec[1:])
    key = raw.lower().replace("_", "")
    assert key in _BY_SQUASHED_NAME, f"unknown activation {raw!r}"
    name = _BY_SQUASHED_NAME[key]
    _, alpha, beta = ACTIVATIONS[name]
    if name == "hard_sigmoid":
        alpha = HARD_SIGMOID_ALPHA[hard_sigmoid]
    params = [alpha, beta]
    for k, value in enumerate(given):
        if value is None:
            continue
        assert params[k] is not None, f"{name} takes no {('alpha', 'beta')[k]}"
        params[k] = float(value)
    return (name, params[0], params[1])


def normalize_activations(cell, num_dirs, *, activation="tanh", recurrent_activation="sigmoid",
                          activations=None, hard_sigmoid="keras3"):
    """Per direction, per slot (f, g[, h]) ``(name, alpha, beta)`` tuples.

    ``activations`` (ONNX form) is a flat list of ``slots`` or ``slots * num_dirs`` entries, or
    the normalised nested form (one sequence of slots per direction); it excludes
    ``activation`` / ``recurrent_activation``. Keras' ``activation`` fills slots g and h,
    ``recurrent_activation`` slot f."""
    slots = _SLOTS[cell]
    if activations is None:
        f = normalize_activation(recurrent_activation, hard_sigmoid)
        g = normalize_activation(activation, hard_sigmoid)
        per_dir = (f, g, g)[:slots]
        return tuple(per_dir for _ in range(num_dirs))
    assert activation == "tanh" and recurrent_activation == "sigmoid", \
        "activations= excludes activation= / recurrent_activation="
    activations = list(activations)
    nested = len(activations) == num_dirs and all(
        isinstance(a, (tuple, list)) and len(a) == slots
        and all(not isinstance(s, str) for s in a) for a in activations)
    if nested:
        flat = [s for a in activations for s in a]
    else:
        flat = activations
        if len(flat) == slots:
            flat = flat * num_dirs
    assert len(flat) == slots * num_dirs, \
        f"activations: need {slots} or {slots * num_dirs} entries, got {len(flat)}"
    flat = [normalize_activation(a, hard_sigmoid) for a in flat]
    return tuple(tuple(flat[d * slots:(d + 1) * slots]) for d in range(num_dirs))


def apply_activation(spec, x):
    """Apply one normalised ``(name, alpha, beta)`` activation to x (float64)."""
    name, alpha, beta = spec
    fn = ACTIVATIONS[name][0]
    return fn(np.asarray(x, dtype=np.float64), alpha, beta)


# --------------------------------------------------------------------------------------------
# Parameters


def _matrix(value):
    """A weight matrix as float64, or as given when it brings its own product (an object with
    ``__rmatmul__`` and ``shape``, e.g. a test's model of quantized arithmetic)."""
    if hasattr(type(value), "__rmatmul__") and not isinstance(value, np.ndarray) \
            and hasattr(value, "shape"):
        return value
    return np.asarray(value, dtype=np.float64)


def _direction_params(params, cell, layer, direction, input_size, H):
    """Collect one layer-direction's weights as {gate: (kernel, recurrent, bias, recurrent_bias)}."""
    prefix = f"layer{layer}.{direction}."
    out = {}
    for gate in GATES[cell]:
        key = prefix + gate
        assert key + ".kernel" in params, f"missing parameter {key}.kernel"
        assert key + ".recurrent" in params, f"missing parameter {key}.recurrent"
        kernel = _matrix(params[key + ".kernel"])
        recurrent = _matrix(params[key + ".recurrent"])
        bias = np.asarray(params.get(key + ".bias", np.zeros(H)), dtype=np.float64)
        if cell == "gru":
            rbias = np.asarray(params.get(key + ".recurrent_bias", np.zeros(H)), dtype=np.float64)
        else:
            assert key + ".recurrent_bias" not in params, f"LSTM has no recurrent_bias ({key})"
            rbias = np.zeros(H)
        assert kernel.shape == (input_size, H), f"{key}.kernel: {kernel.shape} != {(input_size, H)}"
        assert recurrent.shape == (H, H), f"{key}.recurrent: {recurrent.shape} != {(H, H)}"
        assert bias.shape == (H,), f"{key}.bias: {bias.shape} != {(H,)}"
        assert rbias.shape == (H,), f"{key}.recurrent_bias: {rbias.shape} != {(H,)}"
        out[gate] = (kernel, recurrent, bias, rbias)
    return out


def _peephole_params(params, cell, layer, direction, H, peepholes):
    """{gate: (H,) peephole} of an LSTM layer-direction, or None without peepholes."""
    prefix = f"layer{layer}.{direction}."
    if not peepholes:
        stray = [k for k in params if k.startswith(prefix) and k.endswith(".peephole")]
        assert not stray, f"peephole parameters {stray} given without peepholes=True"
        return None
    assert cell == "lstm", "peepholes are an LSTM feature"
    out = {}
    for gate in ("input", "forget", "output"):
        key = prefix + gate + ".peephole"
        assert key in params, f"missing parameter {key}"
        p = np.asarray(params[key], dtype=np.float64)
        assert p.shape == (H,), f"{key}: {p.shape} != {(H,)}"
        out[gate] = p
    assert prefix + "cell.peephole" not in params, "the cell gate has no peephole"
    return out


def _has_layer_direction(params, layer, direction):
    prefix = f"layer{layer}.{direction}."
    return any(k.startswith(prefix) for k in params)


# --------------------------------------------------------------------------------------------
# One cell step for one row (x: (in,), h, c: (H,))


class _Variant:
    """One layer-direction's cell options: activation slots, clip, peepholes, cell_clip,
    input_forget. The defaults are the plain cell."""

    def __init__(self, acts, clip=None, peep=None, cell_clip=None, input_forget=False):
        self.acts = acts            # ((name, alpha, beta), ...) slots f, g[, h]
        self.clip = clip            # None or > 0
        self.peep = peep            # None or {gate: (H,)}
        self.cell_clip = cell_clip  # None or > 0
        self.input_forget = input_forget

    def act(self, slot, v):
        spec = self.acts[slot]
        if spec[0] == "sigmoid":   # the same function objects as the plain cell: same bits
            return sigmoid(v)
        if spec[0] == "tanh":
            return np.tanh(v)
        return apply_activation(spec, v)

    def clipped(self, v):
        if self.clip is None:
            return v
        return np.minimum(np.maximum(v, -self.clip), self.clip)


def _lstm_step(p, x, h, c, v):
    def pre(gate):
        kernel, recurrent, bias, _ = p[gate]
        return x @ kernel + h @ recurrent + bias

    def peep(value, gate, cell_state):
        return value if v.peep is None else value + v.peep[gate] * cell_state

    i = v.act(0, v.clipped(peep(pre("input"), "input", c)))
    if v.input_forget:
        f = 1.0 - i
    else:
        f = v.act(0, v.clipped(peep(pre("forget"), "forget", c)))
    g = v.act(1, v.clipped(pre("cell")))
    c_new = f * c + i * g
    if v.cell_clip is not None:
        c_new = np.minimum(np.maximum(c_new, -v.cell_clip), v.cell_clip)
    o = v.act(0, v.clipped(peep(pre("output"), "output", c_new)))  # the new (clipped) cell
    h_new = o * v.act(2, c_new)
    return h_new, c_new


def _gru_step(p, x, h, reset_after, v):
    def pre(gate):
        kernel, recurrent, bias, rbias = p[gate]
        return x @ kernel + h @ recurrent + bias + rbias

    z = v.act(0, v.clipped(pre("update")))
    r = v.act(0, v.clipped(pre("reset")))
    kernel, recurrent, bias, rbias = p["candidate"]
    if reset_after:
        n = v.act(1, v.clipped(x @ kernel + bias + r * (h @ recurrent + rbias)))
    else:
        n = v.act(1, v.clipped(x @ kernel + bias + rbias + (r * h) @ recurrent))
    h_new = z * h + (1.0 - z) * n
    return h_new


# --------------------------------------------------------------------------------------------
# One direction of one layer, one row


def _run_row(cell, p, x_row, valid_row, h0, c0, backwards, reset_after, masked_output, variant):
    """Run one row through one direction.

    x_row (T, in), valid_row (T,) bool, h0/c0 (H,) (c0 None for GRU).
    Returns (out (T, H) in original time order, h_final, c_final).
    """
    T = x_row.shape[0]
    H = h0.shape[0]
    order = range(T - 1, -1, -1) if backwards else range(T)
    h = h0.copy()
    c = None if c0 is None else c0.copy()
    out = np.zeros((T, H))
    previous_output = np.zeros(H)  # output of the step processed just before; 0 at first
    for t in order:
        if valid_row[t]:
            if cell == "lstm":
                h, c = _lstm_step(p, x_row[t], h, c, variant)
            else:
                h = _gru_step(p, x_row[t], h, reset_after, variant)
            y = h.copy()
        else:
            # Masked: state untouched, input never read.
            if masked_output == "carry":
                y = previous_output.copy()
            else:
                y = np.zeros(H)
        out[t] = y
        previous_output = y
    return out, h, c


# --------------------------------------------------------------------------------------------
# Public entry point


def _split_initial_state(cell, initial_state, n_slots, B, H):
    """Return (h0, c0) arrays of shape (n_slots, B, H); c0 is None for GRU."""
    if initial_state is None:
        h0 = np.zeros((n_slots, B, H))
        c0 = np.zeros((n_slots, B, H)) if cell == "lstm" else None
        return h0, c0
    if cell == "lstm":
        assert isinstance(initial_state, (tuple, list)) and len(initial_state) == 2, (
            "LSTM initial_state must be (h0, c0)"
        )
        h0 = np.asarray(initial_state[0], dtype=np.float64)
        c0 = np.asarray(initial_state[1], dtype=np.float64)
        assert h0.shape == (n_slots, B, H), f"h0 shape {h0.shape} != {(n_slots, B, H)}"
        assert c0.shape == (n_slots, B, H), f"c0 shape {c0.shape} != {(n_slots, B, H)}"
        return h0, c0
    if isinstance(initial_state, (tuple, list)):
        assert len(initial_state) == 1, "GRU initial_state must be h0 or (h0,)"
        initial_state = initial_state[0]
    h0 = np.asarray(initial_state, dtype=np.float64)
    assert h0.shape == (n_slots, B, H), f"h0 shape {h0.shape} != {(n_slots, B, H)}"
    return h0, None


def rnn_forward(cell, params, x, *, hidden_size, num_layers=1, bidirectional=False, reverse=False,
                reset_after=True, mask=None, masked_output="zero", initial_state=None,
                activation="tanh", recurrent_activation="sigmoid", activations=None,
                hard_sigmoid="keras3", peepholes=False, clip=None, cell_clip=None,
                input_forget=False):
    """Reference forward pass of a (stacked, optionally bidirectional) LSTM or GRU layer.

    cell: "lstm" or "gru". params: dict keyed like fastrnn's state_dict,
    "layer{k}.{forward|backward}.{gate}.{kernel|recurrent|bias|recurrent_bias}" with LSTM gates
    input/forget/cell/output and GRU gates update/reset/candidate; kernel (in, H), recurrent
    (H, H), bias (H,), recurrent_bias (H,) (GRU only). Missing bias / recurrent_bias keys mean
    zeros. x: (B, T, I). mask: (B, T) bool or 0/1 ints, True = valid; None = all valid.
    initial_state: LSTM (h0, c0), GRU h0 or (h0,), each (num_layers*num_dirs, B, H) ordered
    [l0, l0_backward, l1, l1_backward, ...]; None = zeros.

    Cell variants (docs/variants.md; module docstring): activation / recurrent_activation (Keras
    names) or activations (ONNX form, or the normalised per-direction form of
    ``normalize_activations``), hard_sigmoid ("keras3": alpha 1/6, "keras2": 0.2, for the bare
    name), peepholes (LSTM; params "layer{k}.{dir}.{input|forget|output}.peephole"), clip (gate
    pre-activations), cell_clip (LSTM c_t), input_forget (LSTM f = 1 - i). Every stacked layer
    uses the same options; activations may differ per direction.

    Returns (out (B, T, num_dirs*H), state): state is (h_n, c_n) for LSTM and h_n for GRU, each
    (num_layers*num_dirs, B, H), every array float64.
    """
    assert cell in GATES, f"cell must be 'lstm' or 'gru', got {cell!r}"
    assert masked_output in _MASKED_OUTPUT_MODES, f"bad masked_output {masked_output!r}"
    assert not (bidirectional and reverse), "reverse=True is for unidirectional layers"
    assert num_layers >= 1
    H = int(hidden_size)
    x = np.asarray(x, dtype=np.float64)
    assert x.ndim == 3, f"x must be (B, T, I), got shape {x.shape}"
    B, T, _ = x.shape
    if mask is None:
        mask = np.ones((B, T), dtype=bool)
    else:
        mask = np.asarray(mask)
        assert mask.shape == (B, T), f"mask shape {mask.shape} != {(B, T)}"
        assert np.all((mask == 0) | (mask == 1)), "mask must be bool or 0/1"
        mask = mask.astype(bool)
    num_dirs = 2 if bidirectional else 1
    h0, c0 = _split_initial_state(cell, initial_state, num_layers * num_dirs, B, H)
    acts = normalize_activations(cell, num_dirs, activation=activation,
                                 recurrent_activation=recurrent_activation,
                                 activations=activations, hard_sigmoid=hard_sigmoid)
    for what, value in (("clip", clip), ("cell_clip", cell_clip)):
        assert value is None or (np.isfinite(value) and value > 0), \
            f"{what} must be None or a finite number > 0, got {value!r}"
    if cell == "gru":
        assert not peepholes and cell_clip is None and not input_forget, \
            "peepholes, cell_clip and input_forget are LSTM features"

    h_n = np.zeros((num_layers * num_dirs, B, H))
    c_n = np.zeros((num_layers * num_dirs, B, H)) if cell == "lstm" else None

    layer_input = x
    for layer in range(num_layers):
        input_size = layer_input.shape[2]
        layer_output = np.zeros((B, T, num_dirs * H))
        for d in range(num_dirs):
            # Key name and processing direction.
            if d == 1:
                key_dir, backwards = "backward", True
            else:
                key_dir, backwards = "forward", bool(reverse)
                if reverse and not _has_layer_direction(params, layer, "forward"):
                    key_dir = "backward"
            p = _direction_params(params, cell, layer, key_dir, input_size, H)
            variant = _Variant(acts[d], clip=None if clip is None else float(clip),
                               peep=_peephole_params(params, cell, layer, key_dir, H,
                                                     peepholes),
                               cell_clip=None if cell_clip is None else float(cell_clip),
                               input_forget=bool(input_forget))
            slot = layer * num_dirs + d
            for b in range(B):
                # IEEE arithmetic, as in the kernels: a diverging variant cell (unbounded gate
                # activations) overflows to inf / NaN without a Python warning.
                with np.errstate(over="ignore", invalid="ignore"):
                    out_row, h_last, c_last = _run_row(
                        cell, p, layer_input[b], mask[b], h0[slot, b],
                        None if c0 is None else c0[slot, b],
                        backwards, reset_after, masked_output, variant,
                    )
                layer_output[b, :, d * H:(d + 1) * H] = out_row
                h_n[slot, b] = h_last
                if cell == "lstm":
                    c_n[slot, b] = c_last
        layer_input = layer_output

    out = layer_input
    state = (h_n, c_n) if cell == "lstm" else h_n
    return out, state
