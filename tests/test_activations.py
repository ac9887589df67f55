"""Accuracy of the float32 rational sigmoid/tanh the kernels use (documented in activations.h)."""
import numpy as np
import pytest

from fastrnn import _core


def sweep(lo, hi, n=2_000_001):
    return np.linspace(lo, hi, n, dtype=np.float32)


@pytest.mark.parametrize("vector", [False, True])
def test_tanh_max_abs_error(vector):
    x = np.concatenate([sweep(-20, 20), sweep(-1e-3, 1e-3, 200_001)])
    t = _core.eval_activation_f32("tanh", x, vector=vector)
    err = np.abs(t.astype(np.float64) - np.tanh(x.astype(np.float64)))
    assert err.max() < 4e-7, err.max()


@pytest.mark.parametrize("vector", [False, True])
def test_sigmoid_max_abs_error(vector):
    x = sweep(-40, 40)
    ref = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    err = np.abs(_core.eval_activation_f32("sigmoid", x, vector=vector).astype(np.float64) - ref)
    assert err.max() < 3e-7, err.max()


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_vector_form_equals_scalar_form(name):
    """The epilogues' eight-wide form (min/max clamps) gives the scalar form's bits, specials
    included: the backward pass recomputes tanh(c) with the scalar form."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 1_000_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    special = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 9.0, -9.0, 9.000001,
                        18.0, -18.0, 1e-45, -1e-45, 3.4e38, -3.4e38], np.float32)
    x = np.concatenate([special, sweep(-20, 20, 400_003), bits])
    a = _core.eval_activation_f32(name, x)
    b = _core.eval_activation_f32(name, x, vector=True)
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


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


@pytest.mark.parametrize("vector", [False, True])
@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_nan_propagates(name, vector):
    assert np.isnan(_core.eval_activation_f32(name, [np.nan, 1.0], vector=vector)[0])
