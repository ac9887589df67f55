"""Backward pass (BPTT): gradients against 5-point central finite differences in float64.

The loss is a fixed random linear functional of every output of the call,
    L = sum(out * Gy) + sum(h_n * Gh) [+ sum(c_n * Gc)],
so dL/d out = Gy and dL/d state = (Gh, Gc) are what backward() receives. For each configuration
we compare, along random directions V, the analytic directional derivative
    <grad_x, Vx> + <grad_h0, Vh> + <grad_c0, Vc> + sum_k <grads[k], Vw[k]>
with (L(p + 2eV)·(-1) + 8 L(p + eV) - 8 L(p - eV) + L(p - 2eV)) / 12e, which has O(e^4) error.
The forward pass used for the finite differences is itself checked against the independent numpy
reference (tests/test_forward.py), so the check is not circular. Dropout runs are compared with
the masks held fixed (the layer's dropout generator is reset to the same state for every
evaluation).
"""
import copy

import numpy as np
import pytest

import fastrnn

EPS = 1e-4
RTOL = 1e-7


def _layer(cell, I, H, **kw):
    cls = fastrnn.LSTM if cell == "lstm" else fastrnn.GRU
    return cls(I, H, dtype="float64", init="torch", **kw)


def _state_shapes(layer, B):
    """Shapes of h (and c): h has proj_size units with a projection."""
    n = layer.num_layers * layer.num_directions
    return [(n, B, layer._h_size), (n, B, layer.hidden_size)][:layer._n_state]


def _inputs(layer, B, T, rng, with_state=True):
    x = rng.normal(size=(B, T, layer.input_size))
    state = None
    if with_state:
        state = tuple(rng.normal(size=shape) * 0.5 for shape in _state_shapes(layer, B))
    return x, state


def _loss_fn(layer, mask, lengths, Gy, Gs, training, rng_state):
    def loss(x, state, weights):
        layer.load_state_dict(weights)
        if rng_state is not None:
            layer._dropout_rng = copy.deepcopy(rng_state)
        out, st = layer(x, mask=mask, lengths=lengths, initial_state=state, training=training)
        st = st if isinstance(st, tuple) else (st,)
        return float(np.sum(out * Gy) + sum(np.sum(s * g) for s, g in zip(st, Gs)))
    return loss


def check_gradients(layer, B, T, *, mask=None, lengths=None, with_state=True, seed=0,
                    n_directions=2):
    rng = np.random.default_rng(seed)
    x, state = _inputs(layer, B, T, rng, with_state)
    D = layer.num_directions
    Gy = rng.normal(size=(B, T, D * layer._h_size))
    Gs = tuple(rng.normal(size=shape) for shape in _state_shapes(layer, B))
    weights = layer.state_dict()
    training = bool(layer.dropout or layer.recurrent_dropout)
    rng_state = copy.deepcopy(layer._dropout_rng) if training else None
    loss = _loss_fn(layer, mask, lengths, Gy, Gs, True if training else False, rng_state)

    # Analytic gradients from one training-mode call.
    layer.load_state_dict(weights)
    if rng_state is not None:
        layer._dropout_rng = copy.deepcopy(rng_state)
    layer(x, mask=mask, lengths=lengths, initial_state=state, training=True)
    gstate = Gs if layer._n_state == 2 else Gs[0]
    gx, gs = layer.backward(Gy, gstate)
    gs = gs if isinstance(gs, tuple) else (gs,)
    assert set(layer.grads) == set(weights)

    for _ in range(n_directions):
        vx = rng.normal(size=x.shape)
        vs = tuple(rng.normal(size=s.shape) for s in state) if state is not None else None
        vw = {k: rng.normal(size=v.shape) for k, v in weights.items()}
        analytic = np.sum(gx * vx) + sum(np.sum(layer.grads[k] * vw[k]) for k in weights)
        if vs is not None:
            analytic += sum(np.sum(g * v) for g, v in zip(gs, vs))

        def at(e):
            xs = x + e * vx
            ss = tuple(s + e * v for s, v in zip(state, vs)) if state is not None else None
            ws = {k: weights[k] + e * vw[k] for k in weights}
            return loss(xs, ss, ws)

        numeric = (-at(2 * EPS) + 8 * at(EPS) - 8 * at(-EPS) + at(-2 * EPS)) / (12 * EPS)
        scale = max(1.0, abs(numeric))
        assert abs(analytic - numeric) <= RTOL * scale, (analytic, numeric)
    layer.load_state_dict(weights)


CELLS = [("lstm", {}), ("gru", {"reset_after": True}), ("gru", {"reset_after": False})]
CELL_IDS = ["lstm", "gru_after", "gru_before"]


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_plain(cell, kw, isa):
    check_gradients(_layer(cell, 3, 5, seed=1, **kw), B=3, T=6)


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("masked_output", ["zero", "carry"])
def test_masks_with_holes_and_empty_rows(cell, kw, masked_output, isa):
    layer = _layer(cell, 4, 6, seed=2, masked_output=masked_output, **kw)
    mask = np.array([[1, 1, 0, 1, 0, 1, 1],    # holes
                     [0, 0, 0, 0, 0, 0, 0],    # all masked: the state passes through
                     [0, 0, 1, 1, 1, 1, 1],    # left padding
                     [1, 1, 1, 0, 0, 0, 0]],   # right padding
                    bool)
    check_gradients(layer, B=4, T=7, mask=mask)


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_lengths_including_zero(cell, kw):
    check_gradients(_layer(cell, 2, 4, seed=3, **kw), B=4, T=5, lengths=[5, 0, 3, 1])


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("masked_output", ["zero", "carry"])
def test_bidirectional_stack(cell, kw, masked_output, isa):
    layer = _layer(cell, 3, 5, seed=4, num_layers=2, bidirectional=True,
                   masked_output=masked_output, **kw)
    check_gradients(layer, B=3, T=5, lengths=[5, 2, 4])


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_reverse_without_state_or_bias(cell, kw):
    layer = _layer(cell, 3, 4, seed=5, reverse=True, use_bias=False, **kw)
    check_gradients(layer, B=2, T=5, with_state=False, mask=[[1, 0, 1, 1, 0], [1, 1, 1, 1, 1]])


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_hidden_larger_than_one_panel(cell, kw):
    # H = 21 spans three float64 panels with a ragged last one; B = 7 spans two row tiles.
    check_gradients(_layer(cell, 5, 21, seed=6, **kw), B=7, T=4, lengths=[4, 3, 4, 1, 2, 4, 4],
                    n_directions=1)


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_with_dropout_masks_held_fixed(cell, kw):
    layer = _layer(cell, 4, 5, seed=7, dropout=0.3, recurrent_dropout=0.4, num_layers=2,
                   bidirectional=True, **kw)
    check_gradients(layer, B=3, T=4, lengths=[4, 2, 3])


def test_backward_needs_a_training_call():
    layer = fastrnn.LSTM(2, 3, seed=0)
    x = np.ones((1, 2, 2))
    with pytest.raises(RuntimeError, match="training-mode call"):
        layer.backward(np.ones((1, 2, 3)))
    layer(x, training=True)
    layer(x)  # an inference call releases the record
    with pytest.raises(RuntimeError, match="training-mode call"):
        layer.backward(np.ones((1, 2, 3)))


def test_backward_checks_gradient_shapes():
    layer = fastrnn.GRU(2, 3, seed=0, bidirectional=True)
    layer(np.ones((2, 4, 2)), training=True)
    with pytest.raises(ValueError, match="grad_out"):
        layer.backward(np.ones((2, 4, 3)))
    with pytest.raises(ValueError, match="grad_state"):
        layer.backward(np.ones((2, 4, 6)), np.ones((1, 2, 3)))
    with pytest.raises(TypeError, match="grad_out"):
        layer.backward(np.full((2, 4, 6), "a"))


def test_frozen_layer_returns_input_gradients_only():
    rng = np.random.default_rng(0)
    layer = _layer("lstm", 3, 4, seed=8)
    x = rng.normal(size=(2, 5, 3))
    g = rng.normal(size=(2, 5, 4))
    layer(x, training=True)
    gx_trainable, _ = layer.backward(g)
    layer.trainable = False
    layer(x, training=True)
    gx_frozen, _ = layer.backward(g)
    assert layer.grads == {}
    np.testing.assert_array_equal(gx_frozen, gx_trainable)


def test_gradients_do_not_depend_on_thread_count():
    rng = np.random.default_rng(1)
    results = []
    for cell, kw in CELLS:
        # B=2: hidden split (H=176 is enough work per step for 2-3 threads); B=24: row split
        for B in (2, 24):
            layer = (fastrnn.LSTM if cell == "lstm" else fastrnn.GRU)(
                48, 176, seed=9, bidirectional=True, **kw)
            x = rng.normal(size=(B, 9, 48))
            lengths = rng.integers(0, 10, size=B)
            g = rng.normal(size=(B, 9, 352))
            before = fastrnn.get_num_threads()
            out = []
            try:
                for nt in (1, 2, 3):
                    fastrnn.set_num_threads(nt)
                    layer(x, lengths=lengths, training=True)
                    gx, gs = layer.backward(g)
                    out.append((gx, gs, layer.grads))
            finally:
                fastrnn.set_num_threads(before)
            for gx, gs, grads in out[1:]:
                np.testing.assert_array_equal(gx, out[0][0])
                for k in grads:
                    np.testing.assert_array_equal(grads[k], out[0][2][k])
            results.append(True)
    assert len(results) == 6


@pytest.mark.parametrize("cell,kw,per_step", [("lstm", {}, 6), ("gru", {"reset_after": True}, 5),
                                              ("gru", {"reset_after": False}, 4)])
def test_record_is_what_the_docs_say_and_inference_keeps_none(cell, kw, per_step):
    layer = (fastrnn.LSTM if cell == "lstm" else fastrnn.GRU)(40, 40, **kw)
    B, T, Hp = 8, 10, 48  # H = 40 padded to 48 float32 lanes
    assert layer._engines[0].record_size(B, T, False) <= 64 + per_step * Hp * B * T * 4 + 64 * 6
    assert layer._engines[0].record_size(B, T, False) >= per_step * Hp * B * T * 4
    x = np.ones((B, T, 40), np.float32)
    layer(x, training=True)
    assert layer._local.tape is not None
    layer(x)
    assert layer._local.tape is None


def test_backward_is_not_affected_by_the_caller_reusing_its_arrays():
    """A training call keeps what backward needs: overwriting the input array (a data loader
    reusing its buffer) between the call and backward() changes nothing."""
    rng = np.random.default_rng(11)
    layer = _layer("gru", 3, 4, seed=11)
    x = rng.normal(size=(2, 5, 3))
    h0 = rng.normal(size=(1, 2, 4))
    g = rng.normal(size=(2, 5, 4))
    layer(x, initial_state=h0, training=True)
    expected = layer.backward(g)[0], dict(layer.grads)
    layer(x, initial_state=h0, training=True)
    x[...] = rng.normal(size=x.shape)
    h0[...] = 0
    gx, _ = layer.backward(g)
    np.testing.assert_array_equal(gx, expected[0])
    for k, v in expected[1].items():
        np.testing.assert_array_equal(layer.grads[k], v)
