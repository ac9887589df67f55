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
"""

import numpy as np

__all__ = ["rnn_forward", "lengths_to_mask", "sigmoid", "GATES"]

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
# Parameters


def _direction_params(params, cell, layer, direction, input_size, H):
    """Collect one layer-direction's weights as {gate: (kernel, recurrent, bias, recurrent_bias)}."""
    prefix = f"layer{layer}.{direction}."
    out = {}
    for gate in GATES[cell]:
        key = prefix + gate
        assert key + ".kernel" in params, f"missing parameter {key}.kernel"
        assert key + ".recurrent" in params, f"missing parameter {key}.recurrent"
        kernel = np.asarray(params[key + ".kernel"], dtype=np.float64)
        recurrent = np.asarray(params[key + ".recurrent"], dtype=np.float64)
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


def _has_layer_direction(params, layer, direction):
    prefix = f"layer{layer}.{direction}."
    return any(k.startswith(prefix) for k in params)


# --------------------------------------------------------------------------------------------
# One cell step for one row (x: (in,), h, c: (H,))


def _lstm_step(p, x, h, c):
    def pre(gate):
        kernel, recurrent, bias, _ = p[gate]
        return x @ kernel + h @ recurrent + bias

    i = sigmoid(pre("input"))
    f = sigmoid(pre("forget"))
    g = np.tanh(pre("cell"))
    o = sigmoid(pre("output"))
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    return h_new, c_new


def _gru_step(p, x, h, reset_after):
    def pre(gate):
        kernel, recurrent, bias, rbias = p[gate]
        return x @ kernel + h @ recurrent + bias + rbias

    z = sigmoid(pre("update"))
    r = sigmoid(pre("reset"))
    kernel, recurrent, bias, rbias = p["candidate"]
    if reset_after:
        n = np.tanh(x @ kernel + bias + r * (h @ recurrent + rbias))
    else:
        n = np.tanh(x @ kernel + bias + rbias + (r * h) @ recurrent)
    h_new = z * h + (1.0 - z) * n
    return h_new


# --------------------------------------------------------------------------------------------
# One direction of one layer, one row


def _run_row(cell, p, x_row, valid_row, h0, c0, backwards, reset_after, masked_output):
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
                h, c = _lstm_step(p, x_row[t], h, c)
            else:
                h = _gru_step(p, x_row[t], h, reset_after)
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
                reset_after=True, mask=None, masked_output="zero", initial_state=None):
    """Reference forward pass of a (stacked, optionally bidirectional) LSTM or GRU layer.

    cell: "lstm" or "gru". params: dict keyed like fastrnn's state_dict,
    "layer{k}.{forward|backward}.{gate}.{kernel|recurrent|bias|recurrent_bias}" with LSTM gates
    input/forget/cell/output and GRU gates update/reset/candidate; kernel (in, H), recurrent
    (H, H), bias (H,), recurrent_bias (H,) (GRU only). Missing bias / recurrent_bias keys mean
    zeros. x: (B, T, I). mask: (B, T) bool or 0/1 ints, True = valid; None = all valid.
    initial_state: LSTM (h0, c0), GRU h0 or (h0,), each (num_layers*num_dirs, B, H) ordered
    [l0, l0_backward, l1, l1_backward, ...]; None = zeros.

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
            slot = layer * num_dirs + d
            for b in range(B):
                out_row, h_last, c_last = _run_row(
                    cell, p, layer_input[b], mask[b], h0[slot, b],
                    None if c0 is None else c0[slot, b],
                    backwards, reset_after, masked_output,
                )
                layer_output[b, :, d * H:(d + 1) * H] = out_row
                h_n[slot, b] = h_last
                if cell == "lstm":
                    c_n[slot, b] = c_last
        layer_input = layer_output

    out = layer_input
    state = (h_n, c_n) if cell == "lstm" else h_n
    return out, state
