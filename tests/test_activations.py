"""Accuracy of the float32 rational sigmoid/tanh the kernels use (documented in activations.h)."""
import numpy as np
import pytest

from fastrnn import _core


def sweep(lo, hi, n=2_000_001):
    return np.linspace(lo, hi, n, dtype=np.float32)


def test_tanh_max_abs_error():
    x = np.concatenate([sweep(-20, 20), sweep(-1e-3, 1e-3, 200_001)])
    err = np.abs(_core.eval_activation_f32("tanh", x).astype(np.float64) - np.tanh(x.astype(np.float64)))
    assert err.max() < 4e-7, err.max()


def test_sigmoid_max_abs_error():
    x = sweep(-40, 40)
    ref = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    err = np.abs(_core.eval_activation_f32("sigmoid", x).astype(np.float64) - ref)
    assert err.max() < 3e-7, err.max()


def test_saturation_and_range():
    big = np.array([-1e30, -100, -9.5, 9.5, 100, 1e30, -np.inf, np.inf], np.float32)
    t = _core.eval_activation_f32("tanh", big)
    s = _core.eval_activation_f32("sigmoid", big)
    np.testing.assert_array_equal(np.sign(t), np.sign(big))
    assert np.all(np.abs(t) <= 1) and np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose(t, np.sign(big), atol=1e-6)


def test_tanh_is_odd_and_monotone():
    x = sweep(0, 10, 100_001)
    t = _core.eval_activation_f32("tanh", x)
    np.testing.assert_array_equal(_core.eval_activation_f32("tanh", -x), -t)
    # Monotone up to float32 rounding of the rational (dips of at most ~4e-7 near |x| = 5.4).
    assert np.all(np.diff(t.astype(np.float64)) >= -5e-7)


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_nan_propagates(name):
    assert np.isnan(_core.eval_activation_f32(name, [np.nan])[0])
