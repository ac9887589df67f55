"""Property-based fuzzing of the public layer API (hypothesis).

Random configurations (B, T, I, H down to 1, both dtypes, any mask pattern, lengths with zeros,
stacked / bidirectional / reverse, both GRU variants, both masked_output modes, with or without an
initial state, training or inference mode) are checked against the independent numpy reference;
float64 draws also check backward() against a central finite difference along a random
direction. Invalid arguments must raise ValueError / TypeError, never crash or pass silently.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrnn

try:
    from . import reference as ref
except ImportError:
    import reference as ref

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def configs(draw):
    cell = draw(st.sampled_from(["lstm", "gru"]))
    bidirectional = draw(st.booleans())
    return dict(
        cell=cell,
        reset_after=draw(st.booleans()) if cell == "gru" else True,
        B=draw(st.integers(1, 5)), T=draw(st.integers(1, 6)),
        I=draw(st.integers(1, 5)), H=draw(st.sampled_from([1, 2, 5, 9, 17])),
        num_layers=draw(st.integers(1, 2)), bidirectional=bidirectional,
        reverse=False if bidirectional else draw(st.booleans()),
        masked_output=draw(st.sampled_from(["zero", "carry"])),
        dtype=draw(st.sampled_from(["float32", "float64"])),
        masking=draw(st.sampled_from(["none", "mask", "lengths"])),
        with_state=draw(st.booleans()), training=draw(st.booleans()),
        use_bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
    )


def build(c):
    kw = dict(num_layers=c["num_layers"], bidirectional=c["bidirectional"],
              reverse=c["reverse"], masked_output=c["masked_output"], dtype=c["dtype"],
              use_bias=c["use_bias"], init="torch", seed=c["seed"])
    if c["cell"] == "lstm":
        return fastrnn.LSTM(c["I"], c["H"], **kw)
    return fastrnn.GRU(c["I"], c["H"], reset_after=c["reset_after"], **kw)


def draw_inputs(c, rng):
    B, T = c["B"], c["T"]
    x = rng.normal(size=(B, T, c["I"]))
    mask = lengths = None
    if c["masking"] == "mask":
        mask = rng.random((B, T)) < 0.6
    elif c["masking"] == "lengths":
        lengths = rng.integers(0, T + 1, size=B)
    state = None
    if c["with_state"]:
        n = (2 if c["bidirectional"] else 1) * c["num_layers"]
        shape = (n, B, c["H"])
        state = tuple(rng.normal(scale=0.5, size=shape) for _ in range(2 if c["cell"] == "lstm" else 1))
    return x, mask, lengths, state


@SETTINGS
@given(configs())
def test_forward_matches_reference_and_backward_matches_finite_differences(c):
    rng = np.random.default_rng(c["seed"])
    layer = build(c)
    x, mask, lengths, state = draw_inputs(c, rng)
    out, st_out = layer(x, mask=mask, lengths=lengths, initial_state=state, training=c["training"])
    ref_mask = mask if lengths is None else ref.lengths_to_mask(lengths, c["T"])
    ref_state = state if c["cell"] == "lstm" else (None if state is None else state[0])
    r_out, r_state = ref.rnn_forward(
        c["cell"], layer.state_dict(), x, hidden_size=c["H"], num_layers=c["num_layers"],
        bidirectional=c["bidirectional"], reverse=c["reverse"], reset_after=c["reset_after"],
        mask=ref_mask, masked_output=c["masked_output"], initial_state=ref_state)
    tol = 1e-11 if c["dtype"] == "float64" else 5e-5
    np.testing.assert_allclose(out, r_out, atol=tol)
    got = st_out if isinstance(st_out, tuple) else (st_out,)
    want = r_state if isinstance(r_state, tuple) else (r_state,)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=tol)

    if c["dtype"] != "float64":
        return
    gy = rng.normal(size=out.shape)
    layer(x, mask=mask, lengths=lengths, initial_state=state, training=True)
    gx, _ = layer.backward(gy)
    weights = layer.state_dict()
    vx = rng.normal(size=x.shape)
    vw = {k: rng.normal(size=v.shape) for k, v in weights.items()}
    analytic = np.sum(gx * vx) + sum(np.sum(layer.grads[k] * vw[k]) for k in weights)

    def loss(e):
        layer.load_state_dict({k: weights[k] + e * vw[k] for k in weights})
        o, _ = layer(x + e * vx, mask=mask, lengths=lengths, initial_state=state)
        return float(np.sum(o * gy))

    eps = 1e-5
    numeric = (loss(eps) - loss(-eps)) / (2 * eps)
    assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric))


@st.composite
def bad_calls(draw):
    kind = draw(st.sampled_from(["features", "rank", "mask_shape", "mask_values", "both",
                                 "lengths_range", "lengths_shape", "state_shape", "dtype"]))
    return kind, draw(st.integers(1, 4)), draw(st.integers(1, 4))


@settings(max_examples=40, deadline=None)
@given(bad_calls())
def test_invalid_calls_raise_cleanly(bad):
    kind, B, T = bad
    layer = fastrnn.GRU(3, 4, bidirectional=True)
    x = np.zeros((B, T, 3))
    kwargs = {}
    if kind == "features":
        x = np.zeros((B, T, 4))
    elif kind == "rank":
        x = np.zeros((B, 3))
    elif kind == "mask_shape":
        kwargs["mask"] = np.ones((B, T + 1), bool)
    elif kind == "mask_values":
        kwargs["mask"] = np.full((B, T), 2)
    elif kind == "both":
        kwargs["mask"] = np.ones((B, T), bool)
        kwargs["lengths"] = np.full(B, T)
    elif kind == "lengths_range":
        kwargs["lengths"] = np.full(B, T + 1)
    elif kind == "lengths_shape":
        kwargs["lengths"] = np.full(B + 1, T)
    elif kind == "state_shape":
        kwargs["initial_state"] = np.zeros((1, B, 4))
    elif kind == "dtype":
        x = np.full((B, T, 3), "x")
    with pytest.raises((ValueError, TypeError)):
        layer(x, **kwargs)
