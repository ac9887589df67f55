"""Tests of the numpy reference (tests/reference.py) that do not trust the reference itself.

* Tiny cases checked against scalar arithmetic written out by hand with math.tanh / math.exp.
* Mask, reverse, stacking and initial-state rules checked by *decomposition*: the masked / reversed
  / stacked / bidirectional result must equal plain runs on per-row sliced, flipped or chained
  inputs. Those plain runs only use the unmasked forward path, which the hand cases pin down.
* When torch is importable, a cross-check against torch.nn.LSTM / nn.GRU (float64), full length and
  packed ragged sequences.
"""

import math
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

try:  # tests/ may or may not be a package
    from . import reference as ref
except ImportError:
    import reference as ref

rnn_forward = ref.rnn_forward

LSTM_GATES = ("input", "forget", "cell", "output")
GRU_GATES = ("update", "reset", "candidate")

# (cell, reset_after) combinations
CELLS = [("lstm", True), ("gru", True), ("gru", False)]
CELL_IDS = ["lstm", "gru_after", "gru_before"]


def sig(v):
    return 1.0 / (1.0 + math.exp(-v))


# ----------------------------------------------------------------------------------------------
# Parameter builders


def scalar_params(cell, w, layer=0, direction="forward"):
    """H=1, I=1 params from scalars: w[gate] = (kernel, recurrent, bias[, recurrent_bias])."""
    p = {}
    for gate, vals in w.items():
        key = f"layer{layer}.{direction}.{gate}"
        p[key + ".kernel"] = np.array([[vals[0]]])
        p[key + ".recurrent"] = np.array([[vals[1]]])
        p[key + ".bias"] = np.array([vals[2]])
        if cell == "gru":
            p[key + ".recurrent_bias"] = np.array([vals[3]])
    return p


def random_params(rng, cell, input_size, H, num_layers=1, bidirectional=False, use_bias=True,
                  scale=0.8):
    gates = LSTM_GATES if cell == "lstm" else GRU_GATES
    dirs = ("forward", "backward") if bidirectional else ("forward",)
    p = {}
    for layer in range(num_layers):
        in_size = input_size if layer == 0 else len(dirs) * H
        for d in dirs:
            for g in gates:
                key = f"layer{layer}.{d}.{g}"
                p[key + ".kernel"] = rng.uniform(-scale, scale, (in_size, H))
                p[key + ".recurrent"] = rng.uniform(-scale, scale, (H, H))
                if use_bias:
                    p[key + ".bias"] = rng.uniform(-scale, scale, H)
                    if cell == "gru":
                        p[key + ".recurrent_bias"] = rng.uniform(-scale, scale, H)
    return p


def random_state(rng, cell, slots, B, H):
    h0 = rng.uniform(-0.9, 0.9, (slots, B, H))
    if cell == "lstm":
        return (h0, rng.uniform(-1.5, 1.5, (slots, B, H)))
    return h0


def state_slice(cell, state, slots=slice(None), rows=slice(None)):
    if cell == "lstm":
        return (state[0][slots, rows], state[1][slots, rows])
    return state[slots, rows]


def state_arrays(cell, state):
    return list(state) if cell == "lstm" else [state]


def rename_params(params, old_prefix, new_prefix):
    return {new_prefix + k[len(old_prefix):]: v for k, v in params.items()
            if k.startswith(old_prefix)}


# ----------------------------------------------------------------------------------------------
# Hand-written scalar recurrences (independent of reference.py)


def hand_lstm_h1(xs, w, h, c):
    """H=1, I=1. w[gate] = (kernel, recurrent, bias). Returns (outputs, h, c)."""
    outs = []
    for x in xs:
        i = sig(x * w["input"][0] + h * w["input"][1] + w["input"][2])
        f = sig(x * w["forget"][0] + h * w["forget"][1] + w["forget"][2])
        g = math.tanh(x * w["cell"][0] + h * w["cell"][1] + w["cell"][2])
        o = sig(x * w["output"][0] + h * w["output"][1] + w["output"][2])
        c = f * c + i * g
        h = o * math.tanh(c)
        outs.append(h)
    return outs, h, c


def hand_gru_h1(xs, w, h, reset_after):
    """H=1, I=1. w[gate] = (kernel, recurrent, bias, recurrent_bias). Returns (outputs, h)."""
    outs = []
    for x in xs:
        kz, rz, bz, rbz = w["update"]
        kr, rr, br, rbr = w["reset"]
        kn, rn, bn, rbn = w["candidate"]
        z = sig(x * kz + h * rz + bz + rbz)
        r = sig(x * kr + h * rr + br + rbr)
        if reset_after:
            n = math.tanh(x * kn + bn + r * (h * rn + rbn))
        else:
            n = math.tanh(x * kn + bn + rbn + (r * h) * rn)
        h = z * h + (1.0 - z) * n
        outs.append(h)
    return outs, h


def hand_lstm_h2(xs, K, R, b, h, c):
    """H=2, I=1, lists. K[g][j]: kernel x -> unit j; R[g][i][j]: recurrent from h_i to unit j."""
    outs = []
    h = list(h)
    c = list(c)
    for x in xs:
        def pre(g, j):
            return x * K[g][j] + h[0] * R[g][0][j] + h[1] * R[g][1][j] + b[g][j]

        i_ = [sig(pre("input", 0)), sig(pre("input", 1))]
        f_ = [sig(pre("forget", 0)), sig(pre("forget", 1))]
        g_ = [math.tanh(pre("cell", 0)), math.tanh(pre("cell", 1))]
        o_ = [sig(pre("output", 0)), sig(pre("output", 1))]
        c = [f_[0] * c[0] + i_[0] * g_[0], f_[1] * c[1] + i_[1] * g_[1]]
        h = [o_[0] * math.tanh(c[0]), o_[1] * math.tanh(c[1])]
        outs.append(list(h))
    return outs, h, c


def hand_gru_h2(xs, K, R, b, rb, h, reset_after):
    """H=2, I=1, lists; same layout as hand_lstm_h2 plus rb[g][j]."""
    outs = []
    h = list(h)
    for x in xs:
        def pre(g, j):
            return x * K[g][j] + h[0] * R[g][0][j] + h[1] * R[g][1][j] + b[g][j] + rb[g][j]

        z = [sig(pre("update", 0)), sig(pre("update", 1))]
        r = [sig(pre("reset", 0)), sig(pre("reset", 1))]
        Rn = R["candidate"]
        n = []
        for j in (0, 1):
            if reset_after:
                hu = h[0] * Rn[0][j] + h[1] * Rn[1][j] + rb["candidate"][j]
                n.append(math.tanh(x * K["candidate"][j] + b["candidate"][j] + r[j] * hu))
            else:
                rh = (r[0] * h[0]) * Rn[0][j] + (r[1] * h[1]) * Rn[1][j]
                n.append(math.tanh(x * K["candidate"][j] + b["candidate"][j]
                                   + rb["candidate"][j] + rh))
        h = [z[0] * h[0] + (1.0 - z[0]) * n[0], z[1] * h[1] + (1.0 - z[1]) * n[1]]
        outs.append(list(h))
    return outs, h


def lists_to_params(cell, K, R, b, rb=None):
    p = {}
    for g in K:
        key = f"layer0.forward.{g}"
        p[key + ".kernel"] = np.array([K[g]], dtype=float)          # (1, 2)
        p[key + ".recurrent"] = np.array(R[g], dtype=float)         # (2, 2), [i][j]
        p[key + ".bias"] = np.array(b[g], dtype=float)
        if cell == "gru":
            p[key + ".recurrent_bias"] = np.array(rb[g], dtype=float)
    return p


LSTM_W1 = {"input": (0.5, -0.4, 0.1), "forget": (-0.3, 0.8, 0.6),
           "cell": (0.9, 0.35, -0.2), "output": (0.7, -0.6, 0.25)}
GRU_W1 = {"update": (0.6, -0.5, 0.2, -0.35), "reset": (-0.7, 0.45, 0.3, 0.55),
          "candidate": (0.8, -0.9, 0.15, 0.7)}

LSTM_K2 = {"input": [0.5, -0.2], "forget": [0.3, 0.7], "cell": [-0.8, 0.4], "output": [0.6, 0.1]}
LSTM_R2 = {"input": [[0.2, -0.7], [0.9, 0.1]], "forget": [[-0.3, 0.5], [0.25, -0.6]],
           "cell": [[0.45, 0.8], [-0.55, 0.3]], "output": [[-0.1, 0.65], [0.35, -0.4]]}
LSTM_B2 = {"input": [0.1, -0.3], "forget": [0.9, 0.2], "cell": [-0.15, 0.05],
           "output": [0.3, -0.25]}

GRU_K2 = {"update": [0.4, -0.6], "reset": [-0.5, 0.3], "candidate": [0.9, -0.45]}
GRU_R2 = {"update": [[0.3, -0.8], [0.6, 0.2]], "reset": [[-0.4, 0.7], [0.15, -0.5]],
          "candidate": [[0.55, -0.9], [0.85, 0.35]]}
GRU_B2 = {"update": [0.2, -0.1], "reset": [0.35, 0.6], "candidate": [-0.3, 0.25]}
GRU_RB2 = {"update": [-0.25, 0.4], "reset": [0.5, -0.45], "candidate": [0.8, -0.7]}


# ----------------------------------------------------------------------------------------------
# Elementary helpers


def test_sigmoid_values_and_stability():
    for v in (-30.0, -5.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 2.0, 30.0):
        assert_allclose(ref.sigmoid(v), 1.0 / (1.0 + math.exp(-v)), rtol=1e-15, atol=0)
    assert ref.sigmoid(0.0) == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = ref.sigmoid(np.array([-1000.0, -745.0, 745.0, 1000.0]))
    assert np.all(np.isfinite(s))
    assert s[0] == 0.0 or s[0] < 1e-300
    assert s[3] == 1.0
    x = np.linspace(-20, 20, 41)
    assert_allclose(ref.sigmoid(x) + ref.sigmoid(-x), 1.0, rtol=0, atol=1e-15)
    assert ref.sigmoid(np.ones((2, 3))).shape == (2, 3)


def test_lengths_to_mask():
    m = ref.lengths_to_mask([0, 2, 3, 1], 3)
    assert m.dtype == bool
    assert_array_equal(m, [[0, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0]])


# ----------------------------------------------------------------------------------------------
# Hand-computed tiny cases


@pytest.mark.parametrize("T", [1, 2, 3])
def test_lstm_h1_hand(T):
    xs = [0.7, -1.2, 0.4][:T]
    h0, c0 = 0.3, -0.5
    outs, h, c = hand_lstm_h1(xs, LSTM_W1, h0, c0)
    p = scalar_params("lstm", LSTM_W1)
    x = np.array(xs).reshape(1, T, 1)
    out, (hn, cn) = rnn_forward("lstm", p, x, hidden_size=1,
                                initial_state=(np.full((1, 1, 1), h0), np.full((1, 1, 1), c0)))
    assert out.shape == (1, T, 1) and hn.shape == (1, 1, 1) and cn.shape == (1, 1, 1)
    assert_allclose(out[0, :, 0], outs, rtol=1e-14, atol=1e-15)
    assert_allclose(hn[0, 0, 0], h, rtol=1e-14)
    assert_allclose(cn[0, 0, 0], c, rtol=1e-14)


def test_lstm_bias_only_closed_form():
    # x = 0 and h0 = c0 = 0: gates are sigmoid/tanh of the biases alone.
    bi, bf, bc, bo = 0.4, 1.0, -0.7, 0.2
    w = {"input": (1.3, 0.9, bi), "forget": (-0.4, 0.2, bf), "cell": (0.5, -1.1, bc),
         "output": (0.8, 0.6, bo)}
    out, (hn, cn) = rnn_forward("lstm", scalar_params("lstm", w), np.zeros((1, 1, 1)),
                                hidden_size=1)
    c = (1 / (1 + math.exp(-bi))) * math.tanh(bc)
    h = (1 / (1 + math.exp(-bo))) * math.tanh(c)
    assert_allclose(cn[0, 0, 0], c, rtol=1e-15)
    assert_allclose(hn[0, 0, 0], h, rtol=1e-15)
    assert_allclose(out[0, 0, 0], h, rtol=1e-15)


@pytest.mark.parametrize("T", [1, 2, 3])
@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_h1_hand(T, reset_after):
    xs = [-0.6, 1.1, 0.35][:T]
    h0 = 0.45
    outs, h = hand_gru_h1(xs, GRU_W1, h0, reset_after)
    p = scalar_params("gru", GRU_W1)
    x = np.array(xs).reshape(1, T, 1)
    out, hn = rnn_forward("gru", p, x, hidden_size=1, reset_after=reset_after,
                          initial_state=np.full((1, 1, 1), h0))
    assert isinstance(hn, np.ndarray) and hn.shape == (1, 1, 1)
    assert_allclose(out[0, :, 0], outs, rtol=1e-14, atol=1e-15)
    assert_allclose(hn[0, 0, 0], h, rtol=1e-14)


def test_gru_h1_variants_differ():
    xs = [-0.6, 1.1, 0.35]
    p = scalar_params("gru", GRU_W1)
    x = np.array(xs).reshape(1, 3, 1)
    h0 = np.full((1, 1, 1), 0.45)
    a, _ = rnn_forward("gru", p, x, hidden_size=1, reset_after=True, initial_state=h0)
    b, _ = rnn_forward("gru", p, x, hidden_size=1, reset_after=False, initial_state=h0)
    assert np.max(np.abs(a - b)) > 1e-2
    # And the hand formulas agree that they differ, by the same amounts.
    ha, _ = hand_gru_h1(xs, GRU_W1, 0.45, True)
    hb, _ = hand_gru_h1(xs, GRU_W1, 0.45, False)
    assert_allclose(a[0, :, 0] - b[0, :, 0], np.array(ha) - np.array(hb), atol=1e-14)


@pytest.mark.parametrize("T", [1, 3])
def test_lstm_h2_hand(T):
    xs = [0.9, -0.4, 1.3][:T]
    h0, c0 = [0.2, -0.6], [0.7, -0.1]
    outs, h, c = hand_lstm_h2(xs, LSTM_K2, LSTM_R2, LSTM_B2, h0, c0)
    p = lists_to_params("lstm", LSTM_K2, LSTM_R2, LSTM_B2)
    x = np.array(xs).reshape(1, T, 1)
    init = (np.array(h0).reshape(1, 1, 2), np.array(c0).reshape(1, 1, 2))
    out, (hn, cn) = rnn_forward("lstm", p, x, hidden_size=2, initial_state=init)
    assert_allclose(out[0], np.array(outs), rtol=1e-14, atol=1e-15)
    assert_allclose(hn[0, 0], h, rtol=1e-14)
    assert_allclose(cn[0, 0], c, rtol=1e-14)
    # The test is sensitive to the orientation of `recurrent` (h @ R, not R @ h).
    pt = {k: (v.T.copy() if k.endswith(".recurrent") else v) for k, v in p.items()}
    out_t, _ = rnn_forward("lstm", pt, x, hidden_size=2, initial_state=init)
    assert np.max(np.abs(out_t - out)) > 1e-3


@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_h2_hand(T, reset_after):
    xs = [0.9, -0.4, 1.3][:T]
    h0 = [0.5, -0.3]
    outs, h = hand_gru_h2(xs, GRU_K2, GRU_R2, GRU_B2, GRU_RB2, h0, reset_after)
    p = lists_to_params("gru", GRU_K2, GRU_R2, GRU_B2, GRU_RB2)
    x = np.array(xs).reshape(1, T, 1)
    out, hn = rnn_forward("gru", p, x, hidden_size=2, reset_after=reset_after,
                          initial_state=np.array(h0).reshape(1, 1, 2))
    assert_allclose(out[0], np.array(outs), rtol=1e-14, atol=1e-15)
    assert_allclose(hn[0, 0], h, rtol=1e-14)
    other, _ = rnn_forward("gru", p, x, hidden_size=2, reset_after=not reset_after,
                           initial_state=np.array(h0).reshape(1, 1, 2))
    assert np.max(np.abs(other - out)) > 1e-3


def test_gru_h2_variants_equal_without_recurrent_bias_and_h0_when_T1():
    # Sanity of the hand formulas: with h0 = 0 and recurrent_bias_candidate = 0, the two
    # candidate formulas coincide for the first step.
    rb = {g: list(v) for g, v in GRU_RB2.items()}
    rb["candidate"] = [0.0, 0.0]
    a, _ = hand_gru_h2([0.7], GRU_K2, GRU_R2, GRU_B2, rb, [0.0, 0.0], True)
    b, _ = hand_gru_h2([0.7], GRU_K2, GRU_R2, GRU_B2, rb, [0.0, 0.0], False)
    assert_allclose(a, b, rtol=1e-15)
    p = lists_to_params("gru", GRU_K2, GRU_R2, GRU_B2, rb)
    ra, _ = rnn_forward("gru", p, np.full((1, 1, 1), 0.7), hidden_size=2, reset_after=True)
    rb_, _ = rnn_forward("gru", p, np.full((1, 1, 1), 0.7), hidden_size=2, reset_after=False)
    assert_allclose(ra[0], a, rtol=1e-14)
    assert_allclose(rb_[0], b, rtol=1e-14)


def test_bidirectional_h1_hand_lstm():
    xs = [0.7, -1.2, 0.4]
    wf = LSTM_W1
    wb = {"input": (-0.2, 0.6, 0.3), "forget": (0.5, -0.25, 0.8),
          "cell": (-0.7, 0.4, 0.1), "output": (0.3, 0.9, -0.45)}
    hf0, cf0, hb0, cb0 = 0.1, -0.2, -0.35, 0.6
    outs_f, hf, cf = hand_lstm_h1(xs, wf, hf0, cf0)
    outs_b_rev, hb, cb = hand_lstm_h1(xs[::-1], wb, hb0, cb0)
    outs_b = outs_b_rev[::-1]
    p = scalar_params("lstm", wf)
    p.update(scalar_params("lstm", wb, direction="backward"))
    init = (np.array([hf0, hb0]).reshape(2, 1, 1), np.array([cf0, cb0]).reshape(2, 1, 1))
    out, (hn, cn) = rnn_forward("lstm", p, np.array(xs).reshape(1, 3, 1), hidden_size=1,
                                bidirectional=True, initial_state=init)
    assert out.shape == (1, 3, 2)
    assert_allclose(out[0, :, 0], outs_f, rtol=1e-14)
    assert_allclose(out[0, :, 1], outs_b, rtol=1e-14)
    assert_allclose(hn[:, 0, 0], [hf, hb], rtol=1e-14)
    assert_allclose(cn[:, 0, 0], [cf, cb], rtol=1e-14)


@pytest.mark.parametrize("reset_after", [True, False])
def test_bidirectional_masked_h1_hand_gru(reset_after):
    # Row 0: valid steps [0, 2] (hole at 1, padding at 3); row 1: nothing valid.
    xs = [0.8, 55.0, -0.9, 77.0]   # masked inputs are large: they must never be read
    mask = np.array([[1, 0, 1, 0], [0, 0, 0, 0]], dtype=bool)
    wb = {"update": (-0.3, 0.4, -0.1, 0.2), "reset": (0.6, -0.2, 0.45, -0.3),
          "candidate": (-0.5, 0.7, 0.35, -0.6)}
    hf0 = [0.2, -0.4]
    hb0 = [-0.1, 0.3]
    f_outs, hf = hand_gru_h1([xs[0], xs[2]], GRU_W1, hf0[0], reset_after)
    b_outs, hb = hand_gru_h1([xs[2], xs[0]], wb, hb0[0], reset_after)
    p = scalar_params("gru", GRU_W1)
    p.update(scalar_params("gru", wb, direction="backward"))
    x = np.array([xs, xs]).reshape(2, 4, 1)
    h0 = np.array([hf0, hb0]).reshape(2, 2, 1)
    for mode in ("zero", "carry"):
        out, hn = rnn_forward("gru", p, x, hidden_size=1, bidirectional=True, mask=mask,
                              reset_after=reset_after, masked_output=mode, initial_state=(h0,))
        assert_allclose(hn[:, 0, 0], [hf, hb], rtol=1e-14)
        assert_array_equal(hn[:, 1, 0], [hf0[1], hb0[1]])   # all-masked row keeps h0
        assert_array_equal(out[1], 0.0)
        # forward: t0 -> f_outs[0], t2 -> f_outs[1]; backward: t2 -> b_outs[0], t0 -> b_outs[1]
        assert_allclose(out[0, 0], [f_outs[0], b_outs[1]], rtol=1e-14)
        assert_allclose(out[0, 2], [f_outs[1], b_outs[0]], rtol=1e-14)
        if mode == "zero":
            assert_array_equal(out[0, 1], 0.0)
            assert_array_equal(out[0, 3], 0.0)
        else:
            # t1: forward copies t0's output, backward copies t2's output (processed before it)
            assert out[0, 1, 0] == out[0, 0, 0] and out[0, 1, 1] == out[0, 2, 1]
            # t3: forward copies t2; backward processes t3 first -> 0
            assert out[0, 3, 0] == out[0, 2, 0] and out[0, 3, 1] == 0.0


def test_carry_left_padding_gives_zero_not_h0_hand():
    xs = [3.0, 0.5, -0.25]
    h0 = 0.6
    mask = np.array([[0, 1, 1]])
    outs, h = hand_gru_h1(xs[1:], GRU_W1, h0, True)
    out, hn = rnn_forward("gru", scalar_params("gru", GRU_W1), np.array(xs).reshape(1, 3, 1),
                          hidden_size=1, mask=mask, masked_output="carry",
                          initial_state=np.full((1, 1, 1), h0))
    assert out[0, 0, 0] == 0.0
    assert_allclose(out[0, 1:, 0], outs, rtol=1e-14)
    assert_allclose(hn[0, 0, 0], h, rtol=1e-14)


def test_reverse_h1_hand_lstm_right_padded_carry():
    # reverse=True with right padding: the padding is processed first -> outputs 0 there (carry
    # has nothing to copy yet), then the valid steps from last to first starting from h0.
    xs = [0.7, -1.2, 9.0]
    h0, c0 = -0.2, 0.4
    outs_rev, h, c = hand_lstm_h1([xs[1], xs[0]], LSTM_W1, h0, c0)
    out, (hn, cn) = rnn_forward("lstm", scalar_params("lstm", LSTM_W1),
                                np.array(xs).reshape(1, 3, 1), hidden_size=1, reverse=True,
                                mask=np.array([[True, True, False]]), masked_output="carry",
                                initial_state=(np.full((1, 1, 1), h0), np.full((1, 1, 1), c0)))
    assert_allclose(out[0, :, 0], [outs_rev[1], outs_rev[0], 0.0], rtol=1e-14)
    assert_allclose([hn[0, 0, 0], cn[0, 0, 0]], [h, c], rtol=1e-14)


# ----------------------------------------------------------------------------------------------
# Masks, by decomposition into per-row valid-only runs

MASK_PATTERNS = [
    [1, 1, 1, 1, 1, 1],   # full
    [1, 1, 1, 1, 0, 0],   # right padding
    [0, 0, 1, 1, 1, 1],   # left padding
    [1, 0, 1, 1, 0, 1],   # holes
    [0, 0, 0, 0, 0, 0],   # all masked
    [0, 0, 0, 1, 0, 0],   # single valid step
    [0, 1, 0, 0, 1, 0],   # holes and padding on both sides
]
MODES = ["forward", "reverse", "bidirectional"]


def mode_kwargs(mode):
    return {"bidirectional": mode == "bidirectional", "reverse": mode == "reverse"}


def expected_carry(out_row, valid, H, mode):
    """Expected masked-step outputs for 'carry', found by searching for the nearest processed
    valid step (not by replaying the loop). Returns an array like out_row."""
    T = out_row.shape[0]
    exp = out_row.copy()
    valid_idx = np.flatnonzero(valid)
    if mode == "forward":
        halves = [(slice(0, H), "earlier")]
    elif mode == "reverse":
        halves = [(slice(0, H), "later")]
    else:
        halves = [(slice(0, H), "earlier"), (slice(H, 2 * H), "later")]
    for t in range(T):
        if valid[t]:
            continue
        for sl, where in halves:
            src = valid_idx[valid_idx < t] if where == "earlier" else valid_idx[valid_idx > t]
            if src.size == 0:
                exp[t, sl] = 0.0
            else:
                s = src.max() if where == "earlier" else src.min()
                exp[t, sl] = out_row[s, sl]
    return exp


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("masked_output", ["zero", "carry"])
def test_mask_equals_valid_subsequence(cell, reset_after, mode, num_layers, masked_output):
    rng = np.random.default_rng(1234 + num_layers)
    I, H, T = 3, 2, 6
    mask = np.array(MASK_PATTERNS, dtype=bool)
    B = mask.shape[0]
    kw = mode_kwargs(mode)
    D = 2 if kw["bidirectional"] else 1
    p = random_params(rng, cell, I, H, num_layers, kw["bidirectional"])
    x = rng.normal(size=(B, T, I))
    x[~mask] = 1e3 * rng.normal(size=(int((~mask).sum()), I))   # garbage at masked steps
    init = random_state(rng, cell, num_layers * D, B, H)
    common = dict(hidden_size=H, num_layers=num_layers, reset_after=reset_after, **kw)

    out, state = rnn_forward(cell, p, x, mask=mask, masked_output=masked_output,
                             initial_state=init, **common)
    assert out.shape == (B, T, D * H)
    for arr in state_arrays(cell, state):
        assert arr.shape == (num_layers * D, B, H)

    for b in range(B):
        idx = np.flatnonzero(mask[b])
        if idx.size == 0:
            for arr, a0 in zip(state_arrays(cell, state), state_arrays(cell, init)):
                assert_array_equal(arr[:, b], a0[:, b])
            assert_array_equal(out[b], 0.0)
            continue
        sub_out, sub_state = rnn_forward(cell, p, x[b:b + 1, idx],
                                         initial_state=state_slice(cell, init, rows=slice(b, b + 1)),
                                         **common)
        assert_allclose(out[b, idx], sub_out[0], rtol=1e-13, atol=1e-14)
        for arr, sub in zip(state_arrays(cell, state), state_arrays(cell, sub_state)):
            assert_allclose(arr[:, b], sub[:, 0], rtol=1e-13, atol=1e-14)
        masked = ~mask[b]
        if masked_output == "zero":
            assert np.all(out[b, masked] == 0.0)
        else:
            assert_array_equal(out[b], expected_carry(out[b], mask[b], H, mode))


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("mode", MODES)
def test_lengths_with_zero_length(cell, reset_after, mode):
    rng = np.random.default_rng(7)
    I, H, T = 2, 3, 5
    lengths = np.array([3, 0, 5, 1])
    mask = ref.lengths_to_mask(lengths, T)
    kw = mode_kwargs(mode)
    D = 2 if kw["bidirectional"] else 1
    p = random_params(rng, cell, I, H, 1, kw["bidirectional"])
    x = rng.normal(size=(4, T, I))
    init = random_state(rng, cell, D, 4, H)
    common = dict(hidden_size=H, reset_after=reset_after, **kw)
    out, state = rnn_forward(cell, p, x, mask=mask, initial_state=init, **common)
    # length 0: the state passes through unchanged, outputs are 0
    for arr, a0 in zip(state_arrays(cell, state), state_arrays(cell, init)):
        assert_array_equal(arr[:, 1], a0[:, 1])
    assert_array_equal(out[1], 0.0)
    for b, n in enumerate(lengths):
        if n == 0:
            continue
        sub_out, sub_state = rnn_forward(cell, p, x[b:b + 1, :n],
                                         initial_state=state_slice(cell, init, rows=slice(b, b + 1)),
                                         **common)
        assert_allclose(out[b, :n], sub_out[0], rtol=1e-13, atol=1e-14)
        assert np.all(out[b, n:] == 0.0)
        for arr, sub in zip(state_arrays(cell, state), state_arrays(cell, sub_state)):
            assert_allclose(arr[:, b], sub[:, 0], rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_integer_mask_and_none_mask(cell, reset_after):
    rng = np.random.default_rng(3)
    p = random_params(rng, cell, 2, 2, 1, True)
    x = rng.normal(size=(3, 4, 2)).astype(np.float32)
    m_int = np.array([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 1]])
    a, sa = rnn_forward(cell, p, x, hidden_size=2, bidirectional=True, mask=m_int,
                        reset_after=reset_after)
    b, sb = rnn_forward(cell, p, x, hidden_size=2, bidirectional=True, mask=m_int.astype(bool),
                        reset_after=reset_after)
    assert a.dtype == np.float64
    assert_array_equal(a, b)
    full, _ = rnn_forward(cell, p, x, hidden_size=2, bidirectional=True, reset_after=reset_after)
    full2, _ = rnn_forward(cell, p, x, hidden_size=2, bidirectional=True, reset_after=reset_after,
                           mask=np.ones((3, 4), dtype=bool))
    assert_array_equal(full, full2)


# ----------------------------------------------------------------------------------------------
# reverse=True


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_reverse_equals_forward_on_reversed_valid_steps(cell, reset_after, num_layers):
    rng = np.random.default_rng(99)
    I, H, T = 2, 3, 6
    mask = np.array(MASK_PATTERNS, dtype=bool)
    B = mask.shape[0]
    p = random_params(rng, cell, I, H, num_layers)
    x = rng.normal(size=(B, T, I))
    init = random_state(rng, cell, num_layers, B, H)
    common = dict(hidden_size=H, num_layers=num_layers, reset_after=reset_after)
    out, state = rnn_forward(cell, p, x, mask=mask, reverse=True, initial_state=init, **common)
    for b in range(B):
        idx = np.flatnonzero(mask[b])
        if idx.size == 0:
            continue
        rev_idx = idx[::-1]
        f_out, f_state = rnn_forward(cell, p, x[b:b + 1, rev_idx],
                                     initial_state=state_slice(cell, init, rows=slice(b, b + 1)),
                                     **common)
        assert_allclose(out[b, idx], f_out[0, ::-1], rtol=1e-13, atol=1e-14)
        for arr, sub in zip(state_arrays(cell, state), state_arrays(cell, f_state)):
            assert_allclose(arr[:, b], sub[:, 0], rtol=1e-13, atol=1e-14)
    # Full-length rows: reverse = forward on x flipped in time, flipped back.
    f_out, _ = rnn_forward(cell, p, x[:, ::-1], initial_state=init, **common)
    full = mask.all(axis=1)
    assert_allclose(out[full], f_out[full][:, ::-1], rtol=1e-13, atol=1e-14)
    # Right-padded rows: reversing the padded tensor instead of each row's valid span differs.
    b = 1
    assert not np.allclose(out[b, :4], f_out[b, ::-1][:4])


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_reverse_equals_backward_half_of_bidirectional(cell, reset_after):
    rng = np.random.default_rng(5)
    I, H, T = 3, 2, 6
    mask = np.array(MASK_PATTERNS, dtype=bool)
    B = mask.shape[0]
    p = random_params(rng, cell, I, H, 1, True)
    x = rng.normal(size=(B, T, I))
    init = random_state(rng, cell, 2, B, H)
    for mode in ("zero", "carry"):
        out, state = rnn_forward(cell, p, x, hidden_size=H, bidirectional=True, mask=mask,
                                 reset_after=reset_after, masked_output=mode, initial_state=init)
        pb = rename_params(p, "layer0.backward.", "layer0.forward.")
        r_out, r_state = rnn_forward(cell, pb, x, hidden_size=H, reverse=True, mask=mask,
                                     reset_after=reset_after, masked_output=mode,
                                     initial_state=state_slice(cell, init, slots=slice(1, 2)))
        assert_array_equal(out[..., H:], r_out)
        for arr, sub in zip(state_arrays(cell, state), state_arrays(cell, r_state)):
            assert_array_equal(arr[1:2], sub)
        # A reverse layer given only 'backward' keys reads them (rename_params here just drops
        # the 'forward' keys).
        r2, _ = rnn_forward(cell, rename_params(p, "layer0.backward.", "layer0.backward."), x,
                            hidden_size=H, reverse=True, mask=mask, reset_after=reset_after,
                            masked_output=mode,
                            initial_state=state_slice(cell, init, slots=slice(1, 2)))
        assert_array_equal(r2, r_out)


# ----------------------------------------------------------------------------------------------
# Stacking and initial-state order


def chain_two(cell, p, x, init, D, **kw):
    p0 = rename_params(p, "layer0.", "layer0.")
    p1 = rename_params(p, "layer1.", "layer0.")
    o1, s1 = rnn_forward(cell, p0, x, num_layers=1,
                         initial_state=state_slice(cell, init, slots=slice(0, D)), **kw)
    o2, s2 = rnn_forward(cell, p1, o1, num_layers=1,
                         initial_state=state_slice(cell, init, slots=slice(D, 2 * D)), **kw)
    states = [np.concatenate([a, b_]) for a, b_ in
              zip(state_arrays(cell, s1), state_arrays(cell, s2))]
    return o2, states


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("masked_output", ["zero", "carry"])
def test_stacked_equals_chained(cell, reset_after, mode, masked_output):
    rng = np.random.default_rng(2024)
    I, H, T, B = 3, 2, 5, 4
    kw = mode_kwargs(mode)
    D = 2 if kw["bidirectional"] else 1
    p = random_params(rng, cell, I, H, 2, kw["bidirectional"])
    x = rng.normal(size=(B, T, I))
    mask = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    init = random_state(rng, cell, 2 * D, B, H)
    common = dict(hidden_size=H, reset_after=reset_after, mask=mask,
                  masked_output=masked_output, **kw)
    out, state = rnn_forward(cell, p, x, num_layers=2, initial_state=init, **common)
    c_out, c_states = chain_two(cell, p, x, init, D, **common)
    assert_array_equal(out, c_out)
    for arr, c in zip(state_arrays(cell, state), c_states):
        assert_array_equal(arr, c)
    # the second layer really consumed the first layer's output (not x)
    one, _ = rnn_forward(cell, rename_params(p, "layer0.", "layer0."), x, num_layers=1,
                         initial_state=state_slice(cell, init, slots=slice(0, D)), **common)
    assert not np.allclose(out, one)


@pytest.mark.parametrize("cell,reset_after", CELLS, ids=CELL_IDS)
def test_initial_state_order_bidirectional_stack(cell, reset_after):
    """[l0, l0_backward, l1, l1_backward]: rebuild a 2-layer bidirectional run from four
    unidirectional single-layer runs, each given its own initial-state slot."""
    rng = np.random.default_rng(11)
    I, H, T, B = 2, 3, 4, 3
    p = random_params(rng, cell, I, H, 2, True)
    x = rng.normal(size=(B, T, I))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 1], [0, 1, 1, 0]], bool)
    init = random_state(rng, cell, 4, B, H)
    common = dict(hidden_size=H, reset_after=reset_after, mask=mask)
    out, state = rnn_forward(cell, p, x, num_layers=2, bidirectional=True, initial_state=init,
                             **common)

    def uni(layer, direction, inp, slot):
        q = rename_params(p, f"layer{layer}.{direction}.", "layer0.forward.")
        return rnn_forward(cell, q, inp, reverse=(direction == "backward"),
                           initial_state=state_slice(cell, init, slots=slice(slot, slot + 1)),
                           **common)

    f0, sf0 = uni(0, "forward", x, 0)
    b0, sb0 = uni(0, "backward", x, 1)
    l0 = np.concatenate([f0, b0], axis=-1)
    f1, sf1 = uni(1, "forward", l0, 2)
    b1, sb1 = uni(1, "backward", l0, 3)
    assert_array_equal(out, np.concatenate([f1, b1], axis=-1))
    for k, arr in enumerate(state_arrays(cell, state)):
        expected = np.concatenate([state_arrays(cell, s)[k] for s in (sf0, sb0, sf1, sb1)])
        assert_array_equal(arr, expected)

    # Every slot matters and they are not interchangeable.
    swapped = [a[[1, 0, 2, 3]] for a in state_arrays(cell, init)]
    swapped = tuple(swapped) if cell == "lstm" else swapped[0]
    out_s, _ = rnn_forward(cell, p, x, num_layers=2, bidirectional=True, initial_state=swapped,
                           **common)
    assert not np.allclose(out_s, out)
    # An all-masked batch returns each slot's initial state where it was given.
    _, st = rnn_forward(cell, p, x, num_layers=2, bidirectional=True, initial_state=init,
                        hidden_size=H, reset_after=reset_after, mask=np.zeros((B, T), bool))
    for arr, a0 in zip(state_arrays(cell, st), state_arrays(cell, init)):
        assert_array_equal(arr, a0)


def test_gru_state_forms_and_missing_biases():
    rng = np.random.default_rng(8)
    p = random_params(rng, "gru", 2, 3, 1, False)
    x = rng.normal(size=(2, 4, 2))
    h0 = rng.normal(size=(1, 2, 3))
    a, ha = rnn_forward("gru", p, x, hidden_size=3, initial_state=h0)
    b, hb = rnn_forward("gru", p, x, hidden_size=3, initial_state=(h0,))
    assert_array_equal(a, b)
    assert isinstance(ha, np.ndarray) and isinstance(hb, np.ndarray)
    zeros, _ = rnn_forward("gru", p, x, hidden_size=3)
    zeros2, _ = rnn_forward("gru", p, x, hidden_size=3, initial_state=np.zeros((1, 2, 3)))
    assert_array_equal(zeros, zeros2)
    for cell in ("lstm", "gru"):
        nob = random_params(rng, cell, 2, 3, 2, True, use_bias=False)
        zb = dict(nob)
        for k in list(nob):
            if k.endswith(".kernel"):
                base = k[: -len(".kernel")]
                zb[base + ".bias"] = np.zeros(3)
                if cell == "gru":
                    zb[base + ".recurrent_bias"] = np.zeros(3)
        o1, s1 = rnn_forward(cell, nob, x, hidden_size=3, num_layers=2, bidirectional=True)
        o2, s2 = rnn_forward(cell, zb, x, hidden_size=3, num_layers=2, bidirectional=True)
        assert_array_equal(o1, o2)


def test_bad_shapes_rejected():
    rng = np.random.default_rng(0)
    p = random_params(rng, "lstm", 2, 3)
    x = rng.normal(size=(1, 2, 2))
    with pytest.raises(AssertionError):
        rnn_forward("lstm", p, x, hidden_size=4)
    with pytest.raises(AssertionError):
        rnn_forward("lstm", p, rng.normal(size=(1, 2, 5)), hidden_size=3)
    bad = dict(p)
    bad["layer0.forward.cell.recurrent"] = np.zeros((3, 2))
    with pytest.raises(AssertionError):
        rnn_forward("lstm", bad, x, hidden_size=3)


# ----------------------------------------------------------------------------------------------
# Cross-check against PyTorch


def torch_to_params(module, cell, num_layers, bidirectional, bias=True):
    sd = {k: v.detach().cpu().numpy().astype(np.float64) for k, v in module.state_dict().items()}
    H = module.hidden_size
    order = ("input", "forget", "cell", "output") if cell == "lstm" else \
        ("reset", "update", "candidate")
    dirs = [("", "forward"), ("_reverse", "backward")] if bidirectional else [("", "forward")]
    p = {}
    for k in range(num_layers):
        for sfx, dname in dirs:
            w_ih, w_hh = sd[f"weight_ih_l{k}{sfx}"], sd[f"weight_hh_l{k}{sfx}"]
            for gi, g in enumerate(order):
                sl = slice(gi * H, (gi + 1) * H)
                key = f"layer{k}.{dname}.{g}"
                p[key + ".kernel"] = w_ih[sl].T.copy()
                p[key + ".recurrent"] = w_hh[sl].T.copy()
                if bias:
                    b_ih, b_hh = sd[f"bias_ih_l{k}{sfx}"], sd[f"bias_hh_l{k}{sfx}"]
                    if cell == "lstm":
                        p[key + ".bias"] = b_ih[sl] + b_hh[sl]
                    else:
                        p[key + ".bias"] = b_ih[sl].copy()
                        p[key + ".recurrent_bias"] = b_hh[sl].copy()
    return p


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_against_torch(cell, bidirectional, bias):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    I, H, L, B, T = 3, 4, 2, 5, 6
    D = 2 if bidirectional else 1
    torch.manual_seed(17)
    cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    mod = cls(I, H, num_layers=L, bidirectional=bidirectional, batch_first=True,
              bias=bias).double()
    with torch.no_grad():   # widen the weights a bit so the nonlinearities are exercised
        for prm in mod.parameters():
            prm.uniform_(-0.9, 0.9)
    mod.eval()
    p = torch_to_params(mod, cell, L, bidirectional, bias)

    rng = np.random.default_rng(21)
    x = rng.normal(size=(B, T, I))
    h0 = rng.normal(scale=0.5, size=(L * D, B, H))
    c0 = rng.normal(scale=0.5, size=(L * D, B, H))
    t_init = (torch.from_numpy(h0), torch.from_numpy(c0)) if cell == "lstm" else \
        torch.from_numpy(h0)
    r_init = (h0, c0) if cell == "lstm" else h0

    def check_state(t_state, r_state):
        t_arrays = [s.detach().numpy() for s in t_state] if cell == "lstm" else \
            [t_state.detach().numpy()]
        for ta, ra in zip(t_arrays, state_arrays(cell, r_state)):
            assert ra.shape == ta.shape
            assert_allclose(ra, ta, rtol=0, atol=1e-10)

    # Full length.
    with torch.no_grad():
        t_out, t_state = mod(torch.from_numpy(x), t_init)
    r_out, r_state = rnn_forward(cell, p, x, hidden_size=H, num_layers=L,
                                 bidirectional=bidirectional, initial_state=r_init)
    assert_allclose(r_out, t_out.numpy(), rtol=0, atol=1e-10)
    check_state(t_state, r_state)

    # Ragged, unsorted lengths via packing.
    lengths = np.array([4, 1, 6, 3, 2])
    packed = pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                  batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        t_packed, t_state = mod(packed, t_init)
    t_out, t_len = pad_packed_sequence(t_packed, batch_first=True, total_length=T)
    assert_array_equal(t_len.numpy(), lengths)
    r_out, r_state = rnn_forward(cell, p, x, hidden_size=H, num_layers=L,
                                 bidirectional=bidirectional, initial_state=r_init,
                                 mask=ref.lengths_to_mask(lengths, T), masked_output="zero")
    assert_allclose(r_out, t_out.numpy(), rtol=0, atol=1e-10)   # padded steps: 0 in both
    check_state(t_state, r_state)
