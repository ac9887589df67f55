"""Frozen weights (`layer.freeze()`): packed once, read-only, bitwise the same results.

The packed copy replaces the per-call packing (and the row-streamed path) of the kernels, so
every path a call can take is run frozen and unfrozen here and compared bit for bit."""
import numpy as np
import pytest

import fastrnn
from fastrnn import _core


def _pair(cls, *args, **kwargs):
    """Two identical layers (same seed): one stays live, one is frozen."""
    return cls(*args, seed=3, **kwargs), cls(*args, seed=3, **kwargs).freeze()


def _data(B, T, I, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((B, T, I)).astype(dtype)


# (B, T, H, threads): rows chosen to reach each path of the forward kernel: per-call packing
# (T >= 8), none (T < 8), the row-streamed steps (B <= 4, T <= 32, 2-8 MB recurrent weights,
# one thread), the one-row streaming path (small weights, B = 1), a hidden-unit split, a row
# split, and the tiled chunks of large batches.
SHAPES = [(3, 12, 40, 1), (2, 5, 40, 1), (1, 25, 384, 1), (3, 20, 384, 1), (1, 9, 48, 1),
          (5, 30, 96, 2), (40, 6, 64, 2), (33, 10, 32, 1)]


@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_rb"])
@pytest.mark.parametrize("B,T,H,threads", SHAPES)
def test_frozen_forward_is_bitwise_the_same(cell, B, T, H, threads):
    cls, kw = (fastrnn.LSTM, {}) if cell == "lstm" else \
        (fastrnn.GRU, {"reset_after": cell == "gru"})
    live, frozen = _pair(cls, 24, H, **kw)
    x = _data(B, T, 24)
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(threads)
    try:
        y0, s0 = live(x)
        y1, s1 = frozen(x)
    finally:
        fastrnn.set_num_threads(before)
    assert frozen.frozen and not live.frozen
    np.testing.assert_array_equal(y1, y0)
    for a, b in zip(s1, s0) if cell == "lstm" else [(s1, s0)]:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs", [
    dict(num_layers=2, bidirectional=True),
    dict(reverse=True),
    dict(dtype="float64"),
    dict(peepholes=True, clip=2.0, cell_clip=1.5),
    dict(recurrent_activation="hard_sigmoid"),
    dict(proj_size=8),        # the projection path has its own layout: nothing packed
    dict(masked_output="carry"),
])
def test_frozen_variants_masks_and_states(kwargs):
    live, frozen = _pair(fastrnn.LSTM, 6, 20, **kwargs)
    dtype = live.dtype
    x = _data(4, 11, 6, dtype)
    lengths = np.array([11, 0, 4, 9])
    D = 2 if kwargs.get("bidirectional") else 1
    L = kwargs.get("num_layers", 1)
    units = kwargs.get("proj_size", 20)
    rng = np.random.default_rng(1)
    h0 = rng.standard_normal((L * D, 4, units)).astype(dtype)
    c0 = rng.standard_normal((L * D, 4, 20)).astype(dtype)
    for call in (dict(), dict(lengths=lengths), dict(initial_state=(h0, c0))):
        y0, (h_0, c_0) = live(x, **call)
        y1, (h_1, c_1) = frozen(x, **call)
        np.testing.assert_array_equal(y1, y0)
        np.testing.assert_array_equal(h_1, h_0)
        np.testing.assert_array_equal(c_1, c_0)


def test_frozen_training_and_step_match():
    live, frozen = _pair(fastrnn.GRU, 5, 48)
    x = _data(3, 14, 5)
    g = _data(3, 14, 48, seed=2)
    y0, _ = live(x, training=True)
    dx0, _ = live.backward(g)
    y1, _ = frozen(x, training=True)
    dx1, _ = frozen.backward(g)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(dx1, dx0)
    for k in live.grads:
        np.testing.assert_array_equal(frozen.grads[k], live.grads[k])
    s0 = s1 = None
    for t in range(x.shape[1]):
        o0, s0 = live.step(x[:, t], s0)
        o1, s1 = frozen.step(x[:, t], s1)
        np.testing.assert_array_equal(o1, o0)
    np.testing.assert_array_equal(o1, y0[:, -1])


def test_frozen_weights_are_read_only_until_unfrozen():
    lstm = fastrnn.LSTM(4, 32, seed=0)
    x = _data(2, 10, 4)
    y_before = lstm(x)[0]
    assert lstm.freeze() is lstm and lstm.freeze() is lstm   # idempotent
    with pytest.raises(ValueError, match="read-only"):
        lstm.gate("forget").bias[...] = 3.0
    with pytest.raises(ValueError, match="frozen"):
        lstm.load_state_dict(lstm.state_dict())
    # readable: state_dict, gate views, exports
    assert lstm.state_dict()["layer0.forward.forget.bias"][0] == 1.0
    np.testing.assert_array_equal(lstm(x)[0], y_before)
    assert lstm.unfreeze() is lstm and not lstm.frozen
    lstm.gate("forget").recurrent[...] *= 0.5     # writable again, seen by the next call
    y_edit = lstm(x)[0]
    assert not np.array_equal(y_edit, y_before)
    # frozen again: the packed copy holds the edited weights
    np.testing.assert_array_equal(lstm.freeze()(x)[0], y_edit)


def test_frozen_weights_repack_the_current_values():
    """A copy packed from stale weights would pass every test above: this one edits, freezes
    and compares against an independent layer holding the edited weights."""
    a = fastrnn.LSTM(8, 400, seed=0)
    b = fastrnn.LSTM(8, 400, seed=1)
    a.load_state_dict(b.state_dict())
    a.freeze()
    x = _data(2, 25, 8)
    np.testing.assert_array_equal(a(x)[0], b(x)[0])


def test_quantized_layers_are_always_frozen():
    q = fastrnn.LSTM(4, 16, seed=0).quantize("int8")
    assert q.frozen and q.freeze() is q
    with pytest.raises(TypeError, match="always frozen"):
        q.unfreeze()
    f = fastrnn.LSTM(4, 16, seed=0).freeze()
    x = _data(2, 6, 4)
    np.testing.assert_array_equal(f.quantize("int8")(x)[0], q(x)[0])


def test_load_can_return_frozen_layers(tmp_path):
    lstm = fastrnn.GRU(3, 24, seed=0)
    path = tmp_path / "g.npz"
    lstm.save(str(path))
    loaded = fastrnn.load(str(path), freeze=True)
    assert loaded.frozen
    x = _data(2, 9, 3)
    np.testing.assert_array_equal(loaded(x)[0], lstm(x)[0])
    assert all(layer.frozen for layer in fastrnn.load_all(str(path), freeze=True).values())
    assert not fastrnn.load(str(path)).frozen


def test_packing_applies_where_the_kernels_read_it():
    assert fastrnn.LSTM(4, 20, seed=0)._engines[0].freeze_recurrent() == 1
    assert fastrnn.GRU(4, 20, bidirectional=True)._engines[0].freeze_recurrent() == 2
    proj = fastrnn.LSTM(4, 20, proj_size=5, seed=0)
    assert proj._engines[0].freeze_recurrent() == 0   # projection: nothing to pack


@pytest.mark.parametrize("cell,kw", [("lstm", {}), ("gru", {}), ("gru", {"reset_after": False}),
                                     ("lstm", {"num_layers": 2}),
                                     ("lstm", {"peepholes": True})])
@pytest.mark.parametrize("I,H", [(1, 64), (20, 40), (3, 8)])
def test_frozen_streaming_steps_read_the_packed_copy_bitwise(cell, kw, I, H):
    """fr_step reads the frozen copy (each gate's rows contiguous) in the plain cells."""
    cls = fastrnn.LSTM if cell == "lstm" else fastrnn.GRU
    live, frozen = _pair(cls, I, H, **kw)
    x = _data(2, 15, I)
    s0 = s1 = None
    for t in range(x.shape[1]):
        y0, s0 = live.step(x[:, t], s0)
        y1, s1 = frozen.step(x[:, t], s1)
        np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(y1, live(x)[0][:, -1])
