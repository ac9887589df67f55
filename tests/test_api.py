"""Public API behaviour: weights by gate name, initialisation, mask helpers, learning phase."""
import threading

import numpy as np
import pytest

import fastrnn


@pytest.mark.parametrize("cls,gates", [(fastrnn.LSTM, ("input", "forget", "cell", "output")),
                                       (fastrnn.GRU, ("update", "reset", "candidate"))])
def test_state_dict_keys_and_shapes(cls, gates):
    layer = cls(5, 7, num_layers=2, bidirectional=True)
    sd = layer.state_dict()
    parts = ["kernel", "recurrent", "bias"] + (["recurrent_bias"] if cls is fastrnn.GRU else [])
    expected = {f"layer{k}.{d}.{g}.{p}" for k in range(2) for d in ("forward", "backward")
                for g in gates for p in parts}
    assert set(sd) == expected
    assert sd["layer0.forward.%s.kernel" % gates[0]].shape == (5, 7)
    assert sd["layer1.backward.%s.kernel" % gates[0]].shape == (14, 7)
    assert sd["layer1.forward.%s.recurrent" % gates[1]].shape == (7, 7)
    assert sd["layer0.backward.%s.bias" % gates[2]].shape == (7,)
    no_bias = cls(5, 7, use_bias=False).state_dict()
    assert not any("bias" in k for k in no_bias)


def test_state_dict_returns_copies_and_round_trips():
    a = fastrnn.GRU(3, 4, seed=0, init="torch")
    b = fastrnn.GRU(3, 4, seed=1, init="torch")
    sd = a.state_dict()
    sd["layer0.forward.update.kernel"][...] = 123.0
    assert not np.any(a.state_dict()["layer0.forward.update.kernel"] == 123.0)
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    np.testing.assert_array_equal(a(x)[0], b(x)[0])


def test_gate_views_are_writable_and_used_by_the_kernel():
    layer = fastrnn.LSTM(2, 3, dtype="float64", seed=0)
    x = np.random.default_rng(1).normal(size=(1, 4, 2))
    before, _ = layer(x)
    g = layer.gate("output")
    assert g.recurrent_bias is None and g.kernel.shape == (2, 3) and g.bias.shape == (3,)
    g.bias[...] = -50.0  # output gate closed: h = sigmoid(-50) * tanh(c) ~ 0
    after, (h, _) = layer(x)
    assert np.abs(after).max() < 1e-15 and not np.allclose(before, after)
    assert np.all(layer.state_dict()["layer0.forward.output.bias"] == -50.0)
    # a view taken earlier keeps working after further calls
    g.bias[...] = 0.0
    np.testing.assert_array_equal(layer.state_dict()["layer0.forward.output.bias"], 0.0)
    gru = fastrnn.GRU(2, 3, bidirectional=True)
    assert gru.gate("candidate", direction="backward").recurrent_bias.shape == (3,)


def test_keras_init():
    H, I = 16, 10
    layer = fastrnn.LSTM(I, H, init="keras", seed=0, dtype="float64")
    sd = layer.state_dict()
    kernel = np.concatenate([sd[f"layer0.forward.{g}.kernel"] for g in
                             ("input", "forget", "cell", "output")], axis=1)
    rec = np.concatenate([sd[f"layer0.forward.{g}.recurrent"] for g in
                          ("input", "forget", "cell", "output")], axis=1)
    limit = np.sqrt(6 / (I + 4 * H))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.8 * limit
    np.testing.assert_allclose(rec @ rec.T, np.eye(H), atol=1e-12)  # orthogonal rows
    assert np.all(sd["layer0.forward.forget.bias"] == 1.0)
    for g in ("input", "cell", "output"):
        assert np.all(sd[f"layer0.forward.{g}.bias"] == 0.0)
    gru = fastrnn.GRU(I, H, seed=0).state_dict()
    assert all(np.all(v == 0) for k, v in gru.items() if k.endswith("bias"))


def test_torch_init_range_and_seed():
    H = 25
    a = fastrnn.GRU(4, H, init="torch", seed=3).state_dict()
    b = fastrnn.GRU(4, H, init="torch", seed=3).state_dict()
    c = fastrnn.GRU(4, H, init="torch", seed=4).state_dict()
    k = 1 / np.sqrt(H)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert np.abs(a[key]).max() <= k + 1e-7
    assert any(not np.array_equal(a[key], c[key]) for key in a)
    lstm = fastrnn.LSTM(4, H, init="torch", seed=0).state_dict()
    assert np.abs(lstm["layer0.forward.input.bias"]).max() <= 2 * k + 1e-7  # b_ih + b_hh


def test_mask_helpers_keras_semantics():
    x = np.array([[[0, 0], [1, 0], [0, 0]], [[5, 5], [5, 1], [0, 0]]], float)
    np.testing.assert_array_equal(fastrnn.mask_from_values(x),
                                  [[False, True, False], [True, True, False]])
    np.testing.assert_array_equal(fastrnn.mask_from_values(x, mask_value=5),
                                  [[True, True, True], [False, True, True]])
    ids = np.array([[3, 0, 2], [0, 0, 1]])
    np.testing.assert_array_equal(fastrnn.mask_from_ids(ids), ids != 0)
    np.testing.assert_array_equal(fastrnn.mask_from_ids(ids, padding_id=2), ids != 2)
    with pytest.raises(ValueError, match="batch, time, features"):
        fastrnn.mask_from_values(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="integer"):
        fastrnn.mask_from_ids(np.zeros((2, 3)))


def test_masking_layer_equivalence():
    """Masking -> LSTM == LSTM(x, mask=mask_from_values(x)) == lengths for right padding."""
    layer = fastrnn.LSTM(3, 5, seed=0, dtype="float64")
    x = np.random.default_rng(0).normal(size=(2, 6, 3))
    x[0, 4:] = 0.0
    a, sa = layer(x, mask=fastrnn.mask_from_values(x))
    b, sb = layer(x, lengths=[4, 6])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa[0], sb[0])


def test_learning_phase_scoping():
    assert fastrnn.get_learning_phase() == 0
    with fastrnn.learning_phase(1):
        assert fastrnn.get_learning_phase() == 1
        seen = []
        t = threading.Thread(target=lambda: seen.append(fastrnn.get_learning_phase()))
        t.start()
        t.join()
        assert seen == [0]  # another thread keeps its own phase
    assert fastrnn.get_learning_phase() == 0
    with pytest.raises(ValueError):
        fastrnn.set_learning_phase(2)


def test_training_mode_without_dropout_equals_inference():
    layer = fastrnn.GRU(3, 4, seed=0)
    x = np.ones((1, 3, 3))
    np.testing.assert_array_equal(layer(x, training=True)[0], layer(x)[0])


def test_repr_names_the_layer():
    r = repr(fastrnn.GRU(3, 4, reset_after=False, bidirectional=True, name="enc"))
    assert "GRU(3, 4" in r and "reset_after=False" in r and "'enc'" in r


def test_numpy_scalar_hyperparameters_accepted():
    layer = fastrnn.GRU(np.int64(3), np.int32(4), dropout=np.float32(0.25),
                        recurrent_dropout=np.float64(0.5))
    assert layer.dropout == 0.25 and layer.recurrent_dropout == 0.5 and layer.hidden_size == 4
