"""Compiled kernels vs the independent numpy reference (tests/reference.py)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrnn
from conftest import TOL
from reference import lengths_to_mask, rnn_forward


def make_layer(cell, I, H, *, reset_after=True, **kw):
    if cell == "lstm":
        return fastrnn.LSTM(I, H, **kw)
    return fastrnn.GRU(I, H, reset_after=reset_after, **kw)


def randomize(layer, rng, scale=0.6):
    """Random weights incl. biases and GRU recurrent biases (init=zeros would hide bugs)."""
    sd = {k: rng.uniform(-scale, scale, v.shape) for k, v in layer.state_dict().items()}
    layer.load_state_dict(sd)
    return {k: np.asarray(v, np.float64) for k, v in layer.state_dict().items()}


MASKS = ["none", "right", "left", "holes", "all_masked_row", "length0"]


def make_mask(kind, B, T, rng):
    if kind == "none":
        return None
    if kind == "right":
        return lengths_to_mask(rng.integers(1, T + 1, B), T)
    if kind == "left":
        lens = rng.integers(1, T + 1, B)
        return np.arange(T)[None, :] >= (T - lens)[:, None]
    if kind == "holes":
        return rng.random((B, T)) < 0.6
    if kind == "all_masked_row":
        m = rng.random((B, T)) < 0.7
        m[0] = False
        return m
    if kind == "length0":
        lens = rng.integers(0, T + 1, B)
        lens[-1] = 0
        return lengths_to_mask(lens, T)
    raise AssertionError(kind)


def run_both(cell, dtype, B, T, I, H, *, mask_kind="none", num_layers=1, bidirectional=False,
             reverse=False, reset_after=True, masked_output="zero", with_state=True, seed=0):
    rng = np.random.default_rng(seed)
    layer = make_layer(cell, I, H, reset_after=reset_after, num_layers=num_layers,
                       bidirectional=bidirectional, reverse=reverse,
                       masked_output=masked_output, dtype=dtype)
    params = randomize(layer, rng)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    mask = make_mask(mask_kind, B, T, rng)
    n = num_layers * (2 if bidirectional else 1)
    state = None
    if with_state:
        h0 = rng.normal(scale=0.5, size=(n, B, H)).astype(dtype)
        state = (h0, rng.normal(scale=0.5, size=(n, B, H)).astype(dtype)) if cell == "lstm" else h0
    out, st_ = layer(x, mask=mask, initial_state=state)
    ref_state = None
    if state is not None:
        ref_state = tuple(np.asarray(s, np.float64) for s in state) if cell == "lstm" \
            else np.asarray(state, np.float64)
    rout, rst = rnn_forward(cell, params, x.astype(np.float64), hidden_size=H,
                            num_layers=num_layers, bidirectional=bidirectional, reverse=reverse,
                            reset_after=reset_after, mask=mask, masked_output=masked_output,
                            initial_state=ref_state)
    return out, st_, rout, rst


def assert_close(out, st_, rout, rst, dtype):
    tol = TOL[np.dtype(dtype)]
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, rout, rtol=0, atol=tol)
    got = st_ if isinstance(st_, tuple) else (st_,)
    want = rst if isinstance(rst, tuple) else (rst,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=tol)


CELLS = [("lstm", True), ("gru", True), ("gru", False)]


@pytest.mark.parametrize("cell,reset_after", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 7, 3, 5), (3, 4, 2, 16), (5, 6, 9, 17),
                                   (2, 3, 4, 33), (9, 5, 12, 24), (26, 4, 7, 40)])
@pytest.mark.parametrize("mask_kind", MASKS)
def test_unidirectional_vs_reference(isa, cell, reset_after, dtype, shape, mask_kind):
    out = run_both(cell, dtype, *shape, mask_kind=mask_kind, reset_after=reset_after)
    assert_close(*out, dtype)


@pytest.mark.parametrize("cell,reset_after", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("masked_output", ["zero", "carry"])
@pytest.mark.parametrize("topology", [dict(bidirectional=True), dict(reverse=True),
                                      dict(num_layers=2), dict(num_layers=3, bidirectional=True),
                                      dict(num_layers=2, reverse=True)])
def test_topologies_vs_reference(isa, cell, reset_after, dtype, mask_kind, masked_output,
                                 topology):
    out = run_both(cell, dtype, 4, 6, 5, 19, mask_kind=mask_kind, reset_after=reset_after,
                   masked_output=masked_output, **topology)
    assert_close(*out, dtype)


@pytest.mark.parametrize("cell,reset_after", CELLS)
def test_without_initial_state_and_bias(isa, cell, reset_after):
    rng = np.random.default_rng(1)
    layer = make_layer(cell, 4, 6, reset_after=reset_after, use_bias=False, dtype="float64",
                       bidirectional=True)
    params = randomize(layer, rng)
    assert not any(k.endswith("bias") for k in params)
    x = rng.normal(size=(3, 5, 4))
    out, st_ = layer(x, lengths=[5, 2, 0])
    rout, rst = rnn_forward(cell, params, x, hidden_size=6, bidirectional=True,
                            reset_after=reset_after, mask=lengths_to_mask([5, 2, 0], 5))
    assert_close(out, st_, rout, rst, np.float64)


@pytest.mark.parametrize("cell,reset_after", CELLS)
def test_long_sequence_float32_drift(cell, reset_after):
    """Activation approximation errors must not accumulate through c_t over long T."""
    out = run_both(cell, np.float32, 2, 400, 8, 32, reset_after=reset_after, seed=3)
    np.testing.assert_allclose(out[0], out[2], rtol=0, atol=2e-4)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(cell=st.sampled_from(CELLS), B=st.integers(1, 9), T=st.integers(1, 8),
       I=st.integers(1, 20), H=st.integers(1, 40), layers=st.integers(1, 3),
       bidir=st.booleans(), carry=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       data=st.data())
def test_hypothesis_ragged(cell, B, T, I, H, layers, bidir, carry, dtype, data):
    cell, reset_after = cell
    mask = np.array(data.draw(st.lists(st.lists(st.booleans(), min_size=T, max_size=T),
                                       min_size=B, max_size=B)), dtype=bool)
    seed = data.draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    layer = make_layer(cell, I, H, reset_after=reset_after, num_layers=layers,
                       bidirectional=bidir, masked_output="carry" if carry else "zero",
                       dtype=dtype)
    params = randomize(layer, rng)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    out, st_ = layer(x, mask=mask)
    rout, rst = rnn_forward(cell, params, x.astype(np.float64), hidden_size=H,
                            num_layers=layers, bidirectional=bidir, reset_after=reset_after,
                            mask=mask, masked_output="carry" if carry else "zero")
    assert_close(out, st_, rout, rst, dtype)


@pytest.mark.parametrize("cell,reset_after", CELLS)
def test_kernel_variants_agree(cell, reset_after):
    """baseline and avx2 differ only by FMA rounding."""
    from fastrnn import _core
    isas = _core.available_isas()
    if len(isas) < 2:
        pytest.skip("only one kernel variant on this CPU")
    results = []
    before = _core.get_isa()
    try:
        for name in isas:
            _core.set_isa(name)
            results.append(run_both(cell, np.float32, 5, 20, 10, 37, mask_kind="holes",
                                    reset_after=reset_after, seed=7)[0])
    finally:
        _core.set_isa(before)
    np.testing.assert_allclose(results[0], results[1], rtol=0, atol=1e-5)


# Shapes that reach every forward path: streaming steps (one row; up to 16 rows at H <= 8),
# row streaming (1-4 rows, 2-8 MB of recurrent weights, T <= 32), tiles of 1-6 rows (AVX-512:
# 2-6 rows with several gate panels per call), chunks.
WIDE_SHAPES = [(1, 9, 5, 40), (3, 9, 8, 8), (2, 5, 16, 384), (4, 3, 7, 512), (3, 6, 10, 40),
               (5, 4, 6, 24), (7, 6, 9, 33), (13, 5, 24, 70), (33, 4, 5, 20)]


@pytest.mark.parametrize("cell,reset_after", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_avx512_gives_the_avx2_bits(cell, reset_after, dtype):
    """The AVX-512 variant holds a whole panel per register; each lane runs the AVX2 variant's
    operations in the same order, so forward outputs, states and gradients are bitwise equal."""
    from fastrnn import _core
    if not {"avx2", "avx512"} <= set(_core.available_isas()):
        pytest.skip("AVX-512 and AVX2 kernels are not both available on this CPU")
    rng = np.random.default_rng(11)
    before = _core.get_isa()
    try:
        for B, T, I, H in WIDE_SHAPES:
            for masked in (False, True):
                layer = make_layer(cell, I, H, reset_after=reset_after, dtype=dtype,
                                   bidirectional=masked, num_layers=1 + masked)
                randomize(layer, rng)
                x = rng.normal(size=(B, T, I)).astype(dtype)
                mask = make_mask("holes", B, T, rng) if masked else None
                g = rng.normal(size=(B, T, H * layer.num_directions)).astype(dtype)
                runs = []
                for name in ("avx2", "avx512"):
                    _core.set_isa(name)
                    out, state = layer(x, mask=mask)
                    layer(x, mask=mask, training=True)
                    dx, _ = layer.backward(g)
                    states = state if isinstance(state, tuple) else (state,)
                    runs.append([out, *states, dx,
                                 *(layer.grads[k] for k in sorted(layer.grads))])
                for a, b in zip(*runs):
                    np.testing.assert_array_equal(a, b, err_msg=f"B={B} T={T} I={I} H={H}")
    finally:
        _core.set_isa(before)


@pytest.mark.parametrize("cell,reset_after", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
def test_step_equals_sequence(isa, cell, reset_after, layers):
    rng = np.random.default_rng(5)
    layer = make_layer(cell, 6, 20, reset_after=reset_after, num_layers=layers, dtype="float64")
    randomize(layer, rng)
    x = rng.normal(size=(3, 7, 6))
    out, final = layer(x)
    state = None
    for t in range(7):
        y, state = layer.step(x[:, t], state)
        np.testing.assert_allclose(y, out[:, t], rtol=0, atol=1e-13)
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    final if isinstance(final, tuple) else (final,)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


def test_batch_size_invariance():
    """A row's result does not depend on which other rows share the batch."""
    rng = np.random.default_rng(2)
    layer = fastrnn.LSTM(16, 48, dtype="float32")
    randomize(layer, rng)
    x = rng.normal(size=(13, 9, 16)).astype(np.float32)
    full, _ = layer(x)
    for b in (0, 6, 12):
        single, _ = layer(x[b:b + 1])
        np.testing.assert_array_equal(single[0], full[b])


@pytest.mark.parametrize("cell,kw", [("lstm", {}), ("gru", {"reset_after": False})])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("B,T,H", [(12, 90, 200), (2, 170, 520)])  # 2 threads: rows / hidden
def test_long_calls_match_the_reference_and_every_thread_count(cell, kw, bidirectional, B, T, H):
    """Long calls with a projection of several MB, split by rows (B=12) and by hidden units
    (B=2) over 2 threads: results match the reference, and 1 and 2 threads agree bitwise (each
    run several times: a race would show as a difference)."""
    import fastrnn
    cls = fastrnn.LSTM if cell == "lstm" else fastrnn.GRU
    layer = cls(24, H, bidirectional=bidirectional, dtype="float64", seed=5, **kw)
    x = np.random.default_rng(5).normal(size=(B, T, 24))
    rng_state = np.random.default_rng(6)
    h0 = rng_state.normal(size=(layer.num_directions, B, H))
    state = (h0, h0 * 0.5) if cell == "lstm" else h0
    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(1)
        out1, _ = layer(x, initial_state=state)
        fastrnn.set_num_threads(2)
        for _ in range(3):
            out2, _ = layer(x, initial_state=state)
            np.testing.assert_array_equal(out1, out2)
    finally:
        fastrnn.set_num_threads(before)
    ref_out, _ = rnn_forward(cell, layer.state_dict(), x, hidden_size=H,
                                 bidirectional=bidirectional, initial_state=state,
                                 reset_after=kw.get("reset_after", True))
    np.testing.assert_allclose(out1, ref_out, atol=1e-11)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_step_fast_path_takes_only_native_plain_arrays(cell):
    """step()'s fast path hands arrays to C as they are: a byte-swapped, subclassed, strided or
    other-batch input must be converted, not read raw (a byte-swapped x or state once came out
    as garbage here)."""
    rng = np.random.default_rng(11)
    layer = make_layer(cell, 3, 4, reset_after=True, num_layers=2, dtype="float32")
    randomize(layer, rng)
    x = rng.normal(size=(2, 3)).astype(np.float32)
    h = rng.normal(size=(2, 2, 4)).astype(np.float32)
    state = (h, h + 1) if cell == "lstm" else h
    y_ref, s_ref = layer.step(x, state)        # establishes the fast path for batch 2
    y_again, _ = layer.step(x, state)
    np.testing.assert_array_equal(y_again, y_ref)
    swap = lambda a: a.astype(a.dtype.newbyteorder(">"))  # noqa: E731
    variants = {
        "swapped x": (swap(x), state),
        "swapped state": (x, tuple(swap(s) for s in state) if cell == "lstm" else swap(h)),
        "strided x": (np.repeat(x, 2, axis=1)[:, ::2], state),
        "float64 x": (x.astype(np.float64), state),
        "list x": (x.tolist(), state),
    }
    for name, (xv, sv) in variants.items():
        y, s = layer.step(xv, sv)
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-6, err_msg=name)
    y1, _ = layer.step(x[:1], tuple(s[:, :1] for s in state) if cell == "lstm" else h[:, :1])
    np.testing.assert_allclose(y1, y_ref[:1], rtol=0, atol=1e-6)
    y2, _ = layer.step(x, state)               # back to batch 2 after batch 1
    np.testing.assert_array_equal(y2, y_ref)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_call_fast_path_takes_only_ready_arrays(cell):
    """A plain inference call skips the input conversion only for a C-contiguous array of the
    layer's dtype and byte order: every other input is converted first and gives the same
    result; training calls, masks and initial states take the general path."""
    rng = np.random.default_rng(12)
    layer = make_layer(cell, 3, 5, reset_after=True, num_layers=2, dtype="float32")
    randomize(layer, rng)
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    y_ref, s_ref = layer(x)
    swap = lambda a: a.astype(a.dtype.newbyteorder(">"))  # noqa: E731
    variants = {
        "swapped": swap(x), "strided": np.repeat(x, 2, axis=2)[:, :, ::2],
        "fortran": np.asfortranarray(x), "float64": x.astype(np.float64), "list": x.tolist(),
        "subclass": x.view(type("Sub", (np.ndarray,), {})),
    }
    for name, xv in variants.items():
        y, s = layer(xv)
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-6, err_msg=name)
    for kw in ({"lengths": [4, 4]}, {"mask": np.ones((2, 4), bool)}, {"training": True},
               {"initial_state": tuple(np.zeros_like(a) for a in s_ref) if cell == "lstm"
                else np.zeros_like(s_ref)}):
        y, _ = layer(x, **kw)
        np.testing.assert_array_equal(y, y_ref, err_msg=str(list(kw)))
    with pytest.raises(ValueError):
        layer(x[:, :, :2])


@pytest.mark.parametrize("cell,reset_after", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("H", [48, 432])
def test_few_rows_match_row_tiles(cell, reset_after, dtype, H):
    """Batches of 1-4 rows run their own paths: one row has one epilogue over all hidden blocks
    at once, and with a short sequence and 2-8 MB of recurrent weights (H = 432: >= 2 MiB in
    float32 for G = 3 too) 1-4 rows get row-streamed products instead of a packed copy. Each must
    compute exactly what the row tiles of a larger batch (6 rows) compute for the same rows:
    masks, initial state, both directions, threads, training record."""
    rng = np.random.default_rng(21)
    for reverse in (False, True):
        layer = make_layer(cell, 9, H, reset_after=reset_after, dtype=dtype, reverse=reverse)
        randomize(layer, rng)
        x = rng.normal(size=(6, 12, 9)).astype(dtype)
        mask = np.ones((6, 12), bool)
        mask[0, 4:7] = False
        mask[2, 9:] = False
        h0 = rng.normal(size=(1, 6, H)).astype(dtype)
        y6, s6 = layer(x, mask=mask, initial_state=(h0, h0 * 0.5) if cell == "lstm" else h0)
        s6 = s6 if isinstance(s6, tuple) else (s6,)
        for rows in (1, 2, 3, 4):
            part = (h0[:, :rows], h0[:, :rows] * 0.5) if cell == "lstm" else h0[:, :rows]
            for threads in (1, 2):
                fastrnn.set_num_threads(threads)
                try:
                    y, s = layer(x[:rows], mask=mask[:rows], initial_state=part)
                    yt, _ = layer(x[:rows], mask=mask[:rows], initial_state=part, training=True)
                finally:
                    fastrnn.set_num_threads(1)
                np.testing.assert_array_equal(y, y6[:rows])
                np.testing.assert_array_equal(yt, y6[:rows])
                for got, ref in zip(s if isinstance(s, tuple) else (s,), s6):
                    np.testing.assert_array_equal(got, ref[:, :rows])


@pytest.mark.parametrize("cell,reset_after", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("I,H", [(1, 8), (3, 48), (1, 200), (20, 20), (64, 48), (300, 40),
                                 (5, 4), (70, 8)])
def test_one_unmasked_row_matches_row_tiles(cell, reset_after, dtype, I, H):
    """An unmasked inference call of one row, or of a few rows when H is at most half a panel
    (H = 4, 8 here), runs as streaming steps (input products inside each step, or for larger
    input weights, I >= 64 here, the whole sequence's projection first); it must give exactly
    the bits the forward kernel's row tiles give those rows in a batch of 17 (more rows than
    are ever streamed): initial state, reverse and bidirectional, two layers, T = 1."""
    rng = np.random.default_rng(8)
    for kw in ({}, {"reverse": True}, {"bidirectional": True, "num_layers": 2}):
        layer = make_layer(cell, I, H, reset_after=reset_after, dtype=dtype, **kw)
        randomize(layer, rng)
        L, D = layer.num_layers, layer.num_directions
        for T in (1, 13):
            x = rng.normal(size=(17, T, I)).astype(dtype)
            h0 = rng.normal(size=(L * D, 17, H)).astype(dtype)
            state = (h0, h0 * 0.5) if cell == "lstm" else h0
            y17, s17 = layer(x, initial_state=state)
            s17 = s17 if isinstance(s17, tuple) else (s17,)
            for b, n in ((0, 1), (4, 1), (1, 2), (2, 3), (3, 4)):
                part = tuple(s[:, b:b + n] for s in (state if cell == "lstm" else (state,)))
                y1, s1 = layer(x[b:b + n], initial_state=part if cell == "lstm" else part[0])
                np.testing.assert_array_equal(y1, y17[b:b + n])
                for got, ref in zip(s1 if isinstance(s1, tuple) else (s1,), s17):
                    np.testing.assert_array_equal(got, ref[:, b:b + n])
