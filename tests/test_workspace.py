"""Scratch memory kept between inference calls (per thread and layer): calls of changing
shapes that reuse it give the numpy reference's results, and a repeated call allocates only
its outputs."""
import tracemalloc

import numpy as np
import pytest

import fastrnn
from conftest import TOL
from reference import rnn_forward
from test_forward import make_layer, randomize


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("num_layers,bidirectional", [(2, False), (3, True), (4, False)])
def test_reused_scratch_matches_reference_across_shapes(cell, num_layers, bidirectional):
    """Growing, shrinking and growing again: the inner layers' outputs live in the kept
    block (two alternating in a stack of 3 or more); each call matches the reference."""
    rng = np.random.default_rng(7)
    layer = make_layer(cell, 5, 6, num_layers=num_layers, bidirectional=bidirectional)
    params = randomize(layer, rng)
    for B, T in [(3, 4), (9, 40), (2, 3), (5, 17), (9, 41)]:
        x = rng.standard_normal((B, T, 5)).astype(np.float32)
        out, _ = layer(x)
        ref, _ = rnn_forward(cell, params, x.astype(np.float64), hidden_size=6,
                             num_layers=num_layers, bidirectional=bidirectional)
        tol = TOL[np.dtype(np.float32)]
        np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


def _peak_growth(call):
    """The most memory traced during call() beyond what was traced before it."""
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    call()
    return tracemalloc.get_traced_memory()[1] - before


def test_repeated_call_allocates_only_its_outputs():
    """The second call of the same shape takes its workspace and the inner layer's output
    from the kept block: it allocates the returned arrays and not much more (the first call
    allocates the block, several times the output)."""
    layer = fastrnn.LSTM(16, 64, num_layers=2)
    x = np.random.default_rng(0).standard_normal((64, 100, 16)).astype(np.float32)
    out_bytes = 64 * 100 * 64 * 4
    tracemalloc.start()
    try:
        first, again = (_peak_growth(lambda: layer(x)) for _ in range(2))
    finally:
        tracemalloc.stop()
    assert first > 3 * out_bytes  # the kept block is allocated by the first call
    assert again < out_bytes + (256 << 10), (first, again)


def test_scratch_is_per_thread():
    """Two threads calling one layer at once never share the kept block (bitwise equal to
    the same calls made one at a time)."""
    import threading
    rng = np.random.default_rng(3)
    layer = fastrnn.GRU(8, 32, num_layers=3)
    randomize(layer, rng)
    xs = [rng.standard_normal((16, 50 + 7 * i, 8)).astype(np.float32) for i in range(4)]
    alone = [layer(x)[0] for x in xs]
    results = {}

    def run(k):
        for _ in range(20):
            for i, x in enumerate(xs[k::2]):
                out = layer(x)[0]
                if not np.array_equal(out, alone[k + 2 * i]):
                    results[k] = False
                    return
        results[k] = True

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: True, 1: True}


@pytest.mark.parametrize("kind", ["lstm-lengths", "gru-bidirectional-mask", "lstm-proj-state"])
def test_out_gets_the_same_bits_and_is_returned(kind):
    rng = np.random.default_rng(11)
    B, T = 5, 9
    if kind == "lstm-lengths":
        layer, kw = fastrnn.LSTM(4, 8, num_layers=2), {"lengths": [9, 3, 0, 7, 1]}
    elif kind == "gru-bidirectional-mask":
        layer, kw = fastrnn.GRU(4, 8, bidirectional=True), {"mask": rng.random((B, T)) < 0.7}
    else:
        layer = fastrnn.LSTM(4, 8, proj_size=3, dtype="float64")
        kw = {"initial_state": (rng.standard_normal((1, B, 3)), rng.standard_normal((1, B, 8)))}
    randomize(layer, rng)
    x = rng.standard_normal((B, T, 4))
    want, want_state = layer(x, **kw)
    out = np.full(want.shape, np.nan, layer.dtype)
    got, got_state = layer(x, out=out, **kw)
    assert got is out
    np.testing.assert_array_equal(out, want)
    as_tuple = (lambda s: s if isinstance(s, tuple) else (s,))
    for a, b in zip(as_tuple(got_state), as_tuple(want_state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_out_is_refused():
    layer = fastrnn.LSTM(4, 8)
    x = np.ones((2, 3, 4), np.float32)
    good = np.empty((2, 3, 8), np.float32)
    bad = {"shape": np.empty((2, 3, 7), np.float32), "dtype": np.empty((2, 3, 8)),
           "layout": np.empty((2, 8, 3), np.float32).transpose(0, 2, 1),
           "list": [[0.0] * 8] * 6}
    readonly = good.copy()
    readonly.flags.writeable = False
    bad["read-only"] = readonly
    for what, out in bad.items():
        with pytest.raises(ValueError, match="out must be"):
            layer(x, out=out)
    wide = np.ones((2, 3, 8), np.float32)
    with pytest.raises(ValueError, match="share memory"):
        fastrnn.LSTM(8, 8)(wide, out=wide)
    state = np.zeros((2 * 3 * 8,), np.float32)  # h0 a view of the output's memory
    with pytest.raises(ValueError, match="initial state"):
        layer(x, initial_state=(state[:16].reshape(1, 2, 8), np.zeros((1, 2, 8))),
              out=state.reshape(2, 3, 8))
    with pytest.raises(ValueError, match="inference"):
        layer(x, out=good, training=True)
