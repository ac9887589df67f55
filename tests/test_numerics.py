"""Numerics under faults: NaN / Inf inputs and denormals.

- NaN in a valid step propagates to that row's later outputs and final state (as in PyTorch,
  ONNX Runtime and Keras: the arithmetic is plain IEEE), never to other rows; NaN in a masked
  step is never read.
- +-Inf inputs give what IEEE arithmetic gives (compared with the float64 numpy reference, NaN
  positions included).
- Denormals are flushed to zero inside kernel calls only (FTZ/DAZ in the kernels' threads,
  restored on exit): after a call, the caller's floating-point mode is untouched.
"""
import numpy as np
import pytest

import fastrnn

try:
    from . import reference as ref
except ImportError:
    import reference as ref


@pytest.mark.parametrize("cls", [fastrnn.LSTM, fastrnn.GRU])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_stays_in_its_row_and_after_its_step(cls, dtype):
    layer = cls(3, 5, seed=0, dtype=dtype, bidirectional=True)
    x = np.random.default_rng(0).normal(size=(3, 6, 3))
    clean, _ = layer(x)
    x[1, 2, 0] = np.nan
    out, state = layer(x)
    h = state[0] if isinstance(state, tuple) else state
    fwd, bwd = out[..., :5], out[..., 5:]
    assert np.isnan(fwd[1, 2:]).all() and not np.isnan(fwd[1, :2]).any()
    assert np.isnan(bwd[1, :3]).all() and not np.isnan(bwd[1, 3:]).any()
    assert np.isnan(h[:, 1]).all()
    np.testing.assert_array_equal(out[[0, 2]], clean[[0, 2]])


@pytest.mark.parametrize("cls", [fastrnn.LSTM, fastrnn.GRU])
def test_nan_in_a_masked_step_is_never_read(cls):
    layer = cls(3, 5, seed=0)
    x = np.random.default_rng(1).normal(size=(2, 6, 3))
    lengths = np.array([6, 3])
    clean, _ = layer(x, lengths=lengths)
    x[1, 3:] = np.nan
    out, _ = layer(x, lengths=lengths)
    np.testing.assert_array_equal(out, clean)


@pytest.mark.parametrize("cell,kw", [("lstm", {}), ("gru", {"reset_after": True}),
                                     ("gru", {"reset_after": False})])
def test_infinite_inputs_follow_ieee_like_the_reference(cell, kw):
    cls = fastrnn.LSTM if cell == "lstm" else fastrnn.GRU
    layer = cls(2, 4, seed=3, dtype="float64", **kw)
    x = np.random.default_rng(2).normal(size=(3, 4, 2))
    x[0, 1, 0] = np.inf
    x[2, 2, 1] = -np.inf
    out, _ = layer(x)
    r, _ = ref.rnn_forward(cell, layer.state_dict(), x, hidden_size=4,
                           reset_after=kw.get("reset_after", True))
    np.testing.assert_allclose(out, r, atol=1e-12, equal_nan=True)
    assert np.isnan(out).any() or np.isinf(x).any()


def test_flush_to_zero_does_not_leak_to_the_caller():
    tiny = np.float32(np.finfo(np.float32).tiny)
    layer = fastrnn.GRU(8, 8, seed=0)
    before = fastrnn.get_num_threads()
    for nt in (1, 2):
        fastrnn.set_num_threads(nt)
        try:
            layer(np.full((4, 5, 8), tiny / 4, np.float32), training=True)
            layer.backward(np.ones((4, 5, 8), np.float32))
        finally:
            fastrnn.set_num_threads(before)
        # numpy in this thread must still produce (not flush) a denormal result
        assert np.float32(tiny) * np.float32(0.25) != 0
        assert np.float32(tiny / 4) * np.float32(1.0) != 0  # and read denormal inputs


def test_denormal_state_does_not_break_results():
    """With FTZ/DAZ the kernels treat denormals as 0: results stay within float tolerance of
    the reference, which computes with denormals."""
    layer = fastrnn.LSTM(4, 6, seed=1, dtype="float64")
    for g in layer._gates:
        layer.gate(g).recurrent[...] *= 1e-310
    x = np.random.default_rng(3).normal(size=(2, 5, 4)) * 1e-300
    out, _ = layer(x)
    r, _ = ref.rnn_forward("lstm", layer.state_dict(), x, hidden_size=6)
    np.testing.assert_allclose(out, r, atol=1e-12)
