"""fastrnn.keras: the drop-in Keras 3 LSTM / GRU layers against stock Keras (torch backend)."""
import os
import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
if keras.backend.backend() != "torch":
    pytest.skip("these tests run Keras on the torch backend", allow_module_level=True)
fk = pytest.importorskip("fastrnn.keras")

B, T, I, H = 4, 7, 5, 6
CELLS = {"lstm": (keras.layers.LSTM, "LSTM", {}),
         "gru": (keras.layers.GRU, "GRU", {}),
         "gru_reset_before": (keras.layers.GRU, "GRU", {"reset_after": False})}


def _masks(kind):
    """(B, T) bool masks: right padding, left padding, holes, and a fully masked row."""
    m = np.ones((B, T), bool)
    if kind == "right":
        m[0, 4:] = m[1, 2:] = False
    elif kind == "left":
        m[0, :3] = m[2, :5] = False
    elif kind == "mixed":
        m[0, :2] = False
        m[1, 5:] = False
        m[2, 1] = m[2, 3] = False
        m[3, :] = False
    return m


def _pair(cell, **kwargs):
    """A stock Keras layer and the fastrnn.keras one with the same weights."""
    stock_cls, fast_name, extra = CELLS[cell]
    stock = stock_cls(H, **extra, **kwargs)
    fast = getattr(fk, fast_name)(H, **extra, **kwargs)
    for layer in (stock, fast):
        layer.build((None, T, I))
    _copy_weights(stock, fast)
    return stock, fast


def _copy_weights(src, dst):
    # variable by variable: Layer.get_weights warns under numpy 2 on the torch backend
    assert len(src.weights) == len(dst.weights)
    for a, b in zip(src.weights, dst.weights):
        b.assign(a.value)


def _t(a, grad=False):
    return torch.tensor(a, requires_grad=grad)


def _close(a, b, tol=1e-5):
    a = a if isinstance(a, (list, tuple)) else [a]
    b = b if isinstance(b, (list, tuple)) else [b]
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert tuple(p.shape) == tuple(q.shape)
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=0, atol=tol)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "right", "left", "mixed"])
def test_outputs_and_states_match_keras(cell, go_backwards, mask_kind):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    mask = None if mask_kind == "none" else _t(_masks(mask_kind))
    n_states = 2 if cell == "lstm" else 1
    init = [_t(rng.standard_normal((B, H)).astype(np.float32)) for _ in range(n_states)]
    for return_sequences in (True, False):
        stock, fast = _pair(cell, go_backwards=go_backwards, return_sequences=return_sequences,
                            return_state=True)
        with torch.no_grad():
            for initial_state in (None, init):
                want = stock(_t(x), mask=mask, initial_state=initial_state)
                got = fast(_t(x), mask=mask, initial_state=initial_state)
                _close(got, want)
        assert fast.fastrnn_repacks == 1  # fastrnn ran (and packed the weights once)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_zero_output_for_mask_float64_and_plain_output(cell):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((B, T, I))
    stock_cls, fast_name, _ = CELLS[cell]
    kw = dict(return_sequences=True, zero_output_for_mask=True, dtype="float64")
    stock, fast = stock_cls(H, **kw), getattr(fk, fast_name)(H, **kw)
    for layer in (stock, fast):
        layer.build((None, T, I))
    _copy_weights(stock, fast)
    with torch.no_grad():
        want = stock(_t(x), mask=_t(_masks("mixed")))
        got = fast(_t(x), mask=_t(_masks("mixed")))
    assert got.dtype == torch.float64
    # Keras' own masked loop on the torch backend loses float64 precision (~1e-8 off a
    # float64 numpy recurrence here, fastrnn ~1e-16): a float32 tolerance would miss a
    # float32 fastrnn path, hence 1e-7
    _close(got, want, tol=1e-7)
    assert fast.fastrnn_repacks == 1


def _masked_models(fast_cls, stock_cls):
    """Embedding(mask_zero) and Masking models around the same recurrent layer type."""
    ids = keras.Input((None,), dtype="int32")
    emb = keras.layers.Embedding(20, I, mask_zero=True)(ids)
    values = keras.Input((None, I))
    masked = keras.layers.Masking(0.0)(values)
    out = []
    for cls in (stock_cls, fast_cls):
        out.append((keras.Model(ids, cls(H, return_sequences=True, name="rnn_e")(emb)),
                    keras.Model(values, cls(H, return_sequences=True, name="rnn_m")(masked))))
    return out


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_masks_from_embedding_and_masking(cell):
    stock_cls, fast_name, _ = CELLS[cell]
    (stock_e, stock_m), (fast_e, fast_m) = _masked_models(getattr(fk, fast_name), stock_cls)
    _copy_weights(stock_e, fast_e)
    _copy_weights(stock_m, fast_m)
    rng = np.random.default_rng(3)
    ids = rng.integers(1, 20, (B, T))
    ids[0, 4:] = 0   # right padding
    ids[1, :3] = 0   # left padding
    ids[2, 2] = 0
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    x[0, 5:] = 0.0
    x[1, :2] = 0.0
    x[3, 3] = 0.0
    with torch.no_grad():
        _close(fast_e(_t(ids)), stock_e(_t(ids)))
        _close(fast_m(_t(x)), stock_m(_t(x)))
    assert fast_e.layers[-1].fastrnn_repacks == 1 and fast_m.layers[-1].fastrnn_repacks == 1


@pytest.mark.parametrize("cell", ["lstm", "gru_reset_before"])
def test_bidirectional(cell):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    mask = _t(_masks("mixed"))
    stock_cls, fast_name, extra = CELLS[cell]
    n_states = 2 if cell == "lstm" else 1
    init = [_t(rng.standard_normal((B, H)).astype(np.float32)) for _ in range(2 * n_states)]
    for return_sequences in (True, False):
        kw = dict(extra, return_sequences=return_sequences, return_state=True)
        stock = keras.layers.Bidirectional(stock_cls(H, **kw))
        fast = keras.layers.Bidirectional(getattr(fk, fast_name)(H, **kw))
        for layer in (stock, fast):
            layer.build((None, T, I))
        _copy_weights(stock, fast)
        # Bidirectional copies its layer through the config: both halves stay fastrnn layers
        assert type(fast.forward_layer) is getattr(fk, fast_name)
        assert type(fast.backward_layer) is getattr(fk, fast_name)
        assert fast.backward_layer.go_backwards
        with torch.no_grad():
            for m in (None, mask):
                _close(fast(_t(x), mask=m, initial_state=init),
                       stock(_t(x), mask=m, initial_state=init))
                _close(fast(_t(x), mask=m), stock(_t(x), mask=m))
        assert fast.backward_layer.fastrnn_repacks == 1


def _grads(layer, x, mask, init, **call):
    xt = _t(x, grad=True)
    states = [_t(s, grad=True) for s in init] or None
    out = layer(xt, mask=mask, initial_state=states, **call)
    out = out if isinstance(out, (list, tuple)) else [out]
    # weights per output, so that every output (and each state) gets its own gradient
    loss = sum(((o ** 2) * (k + 1)).sum() for k, o in enumerate(out))
    loss.backward()
    grads = [xt.grad] + [s.grad for s in (states or [])]
    grads += [v.value.grad.clone() for v in layer.trainable_variables]
    for v in layer.trainable_variables:
        v.value.grad = None
    return grads


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("go_backwards", [False, True])
def test_gradients_match_keras(cell, go_backwards):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    n_states = 2 if cell == "lstm" else 1
    init = [rng.standard_normal((B, H)).astype(np.float32) for _ in range(n_states)]
    mask = _t(_masks("mixed"))
    for return_sequences in (True, False):
        stock, fast = _pair(cell, go_backwards=go_backwards, return_sequences=return_sequences,
                            return_state=True)
        want = _grads(stock, x, mask, init, training=True)
        got = _grads(fast, x, mask, init, training=True)
        assert len(got) == 1 + n_states + 3
        _close(got, want, tol=2e-5)
        # inference-mode calls are differentiable too
        _close(_grads(fast, x, None, [], training=False),
               _grads(stock, x, None, [], training=False), tol=2e-5)
        assert fast.fastrnn_repacks == 1


def test_two_calls_before_backward():
    """A layer used twice in one graph (shared weights): each call keeps its own record."""
    stock, fast = _pair("lstm", return_sequences=True)
    rng = np.random.default_rng(14)
    xs = [rng.standard_normal((B, T, I)).astype(np.float32) for _ in range(2)]
    grads = []
    for layer in (stock, fast):
        inputs = [_t(x, grad=True) for x in xs]
        loss = (layer(inputs[0], training=True) ** 2).sum() + \
            (layer(inputs[1], mask=_t(_masks("left")), training=True) ** 3).sum()
        loss.backward()
        grads.append([t.grad for t in inputs] + [v.value.grad for v in layer.trainable_variables])
    _close(grads[1], grads[0], tol=2e-5)


def test_no_bias_gradients():
    stock, fast = _pair("lstm", use_bias=False, return_sequences=True)
    x = np.random.default_rng(6).standard_normal((B, T, I)).astype(np.float32)
    _close(_grads(fast, x, _t(_masks("left")), [], training=True),
           _grads(stock, x, _t(_masks("left")), [], training=True), tol=2e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_dropout_only_in_training(cell):
    rng = np.random.default_rng(7)
    x = _t(rng.standard_normal((B, T, I)).astype(np.float32))
    stock, fast = _pair(cell, dropout=0.4, recurrent_dropout=0.3, return_sequences=True)
    mask = _t(_masks("right"))
    with torch.no_grad():
        reference = stock(x, mask=mask, training=False)
        _close(fast(x, mask=mask, training=False), reference)
        _close(fast(x, mask=mask), reference)  # Keras' default: inference
        dropped = [fast(x, mask=mask, training=True) for _ in range(2)]
    for out in dropped:
        assert (out - reference).abs().max() > 1e-3
    assert (dropped[0] - dropped[1]).abs().max() > 1e-3  # fresh masks per call
    # the training phase reaches the layer through a model too (Keras' call context)
    inp = keras.Input((None, I))
    model = keras.Model(inp, getattr(fk, CELLS[cell][1])(H, dropout=0.4,
                                                           return_sequences=True)(inp))
    with torch.no_grad():
        assert (model(x, training=True) - model(x, training=False)).abs().max() > 1e-3
    # a training call with gradients gets dropout and finite gradients
    grads = _grads(fast, x.numpy(), mask, [], training=True)
    assert all(torch.isfinite(g).all() for g in grads)


def test_dropout_statistics():
    """Input dropout with rate p zeroes features: with a kernel reading one feature, the
    first output step is 0 (h = o * tanh(c) with c = i * g and g from the dropped input)
    about a fraction p of the time."""
    layer = fk.LSTM(1, dropout=0.5, return_sequences=True, use_bias=False)
    layer.build((None, 1, 1))
    layer.cell.kernel.assign(np.full((1, 4), 2.0, np.float32))
    with torch.no_grad():
        out = layer(torch.ones((4000, 1, 1)), training=True)
    zero = float((out.abs() < 1e-7).float().mean())
    assert abs(zero - 0.5) < 0.05


def test_weights_repacked_only_when_changed():
    stock, fast = _pair("gru", return_sequences=True)
    x = _t(np.random.default_rng(8).standard_normal((B, T, I)).astype(np.float32))
    with torch.no_grad():
        fast(x)
        fast(x)
    assert fast.fastrnn_repacks == 1
    fast.cell.recurrent_kernel.assign(fast.cell.recurrent_kernel.value * 0.5)
    stock.cell.recurrent_kernel.assign(stock.cell.recurrent_kernel.value * 0.5)
    with torch.no_grad():
        _close(fast(x), stock(x))
    assert fast.fastrnn_repacks == 2
    # an optimizer step changes the variables: the next call sees the new weights
    optimizer = keras.optimizers.SGD(0.1)
    for layer in (stock, fast):
        out = layer(x, training=True)
        (out ** 2).sum().backward()
        optimizer_vars = layer.trainable_variables
        grads = [v.value.grad for v in optimizer_vars]
        (optimizer if layer is stock else keras.optimizers.SGD(0.1)).apply(grads, optimizer_vars)
    with torch.no_grad():
        _close(fast(x), stock(x))
    assert fast.fastrnn_repacks == 3


def test_config_and_weights_interchange():
    fast = fk.LSTM(H, go_backwards=True, return_state=True, dropout=0.1, name="enc")
    config = fast.get_config()
    stock = keras.layers.LSTM.from_config(config)
    again = fk.LSTM.from_config(stock.get_config())
    assert stock.get_config() == config == again.get_config()
    assert keras.saving.get_registered_name(fk.LSTM) == "fastrnn>LSTM"
    assert keras.saving.get_registered_name(fk.GRU) == "fastrnn>GRU"


def _text_model():
    ids = keras.Input((None,), dtype="int32")
    z = keras.layers.Embedding(30, 8, mask_zero=True)(ids)
    z = keras.layers.Bidirectional(keras.layers.LSTM(12, return_sequences=True))(z)
    z = keras.layers.GRU(10)(z)
    return keras.Model(ids, keras.layers.Dense(3)(z))


def _ragged_ids(rng, batch=6, steps=9):
    ids = rng.integers(1, 30, (batch, steps))
    for row, n in enumerate(rng.integers(1, steps + 1, batch)):
        ids[row, n:] = 0
    ids[0, :2] = 0  # and one left-padded row
    return ids


def test_accelerate_model_outputs_and_gradients():
    model = _text_model()
    fast = fk.accelerate(model)
    assert fast is not model
    bi, gru = fast.layers[2], fast.layers[3]
    assert type(bi) is keras.layers.Bidirectional
    assert type(bi.forward_layer) is fk.LSTM and type(bi.backward_layer) is fk.LSTM
    assert bi.backward_layer.go_backwards and type(gru) is fk.GRU
    assert all(type(layer) is not fk.LSTM for layer in model.layers)  # the original stays
    ids = _t(_ragged_ids(np.random.default_rng(9)))
    with torch.no_grad():
        _close(fast(ids), model(ids))
    assert gru.fastrnn_repacks == 1 and bi.forward_layer.fastrnn_repacks == 1
    grads = []
    for m in (model, fast):
        (m(ids, training=True) ** 2).sum().backward()
        grads.append([v.value.grad.clone() for v in m.trainable_variables])
    assert len(grads[1]) == 12  # embedding, 2 x 3 LSTM, 3 GRU, 2 dense
    _close(grads[1], grads[0], tol=2e-5)


def test_accelerate_sequential_and_unsupported_layers_stay():
    model = keras.Sequential([keras.Input((None, I)),
                              keras.layers.GRU(H, return_sequences=True),
                              keras.layers.LSTM(H, activation="gelu")])
    fast = fk.accelerate(model)
    assert type(fast.layers[0]) is fk.GRU
    assert type(fast.layers[1]) is keras.layers.LSTM  # gelu: fastrnn does not run it
    x = _t(np.random.default_rng(10).standard_normal((B, T, I)).astype(np.float32))
    with torch.no_grad():
        _close(fast(x), model(x))
    with pytest.raises(TypeError, match="keras.Model"):
        fk.accelerate(keras.layers.LSTM(3))


def test_save_and_load_accelerated_model(tmp_path):
    fast = fk.accelerate(_text_model())
    ids = _t(_ragged_ids(np.random.default_rng(11)))
    path = os.path.join(tmp_path, "model.keras")
    with warnings.catch_warnings():
        # Keras' own weight saving converts tensors with a call numpy 2 deprecates
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        fast.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[3]) is fk.GRU
    assert type(loaded.layers[2].backward_layer) is fk.LSTM
    with torch.no_grad():
        _close(loaded(ids), fast(ids), tol=0)


def test_fallback_warns_once_and_matches_keras():
    rng = np.random.default_rng(12)
    x = _t(rng.standard_normal((B, T, I)).astype(np.float32))
    stock, fast = _pair("lstm", activation="gelu", return_sequences=True)
    with pytest.warns(UserWarning, match="gelu"):
        with torch.no_grad():
            _close(fast(x), stock(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            fast(x)  # warned once per layer
    assert fast.fastrnn_repacks == 0
    # stateful layers keep their state between calls: Keras runs them
    stock, fast = keras.layers.GRU(H, stateful=True), fk.GRU(H, stateful=True)
    for layer in (stock, fast):
        layer.build((B, T, I))
    _copy_weights(stock, fast)
    with pytest.warns(UserWarning, match="stateful"):
        with torch.no_grad():
            _close([fast(x), fast(x)], [stock(x), stock(x)])


def test_other_backends_infer_generically_and_refuse_training(monkeypatch):
    """Only torch is installed: the backend-neutral path (keras.ops conversions, repack at
    every call) runs under another backend's name."""
    stock, fast = _pair("lstm", return_sequences=True, return_state=True)
    x = _t(np.random.default_rng(13).standard_normal((B, T, I)).astype(np.float32))
    monkeypatch.setattr(fk, "_backend", lambda: "numpy")
    with torch.no_grad(), warnings.catch_warnings():
        # keras.ops.convert_to_numpy of a torch tensor uses a call numpy 2 deprecates
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        want = stock(x, mask=_t(_masks("left")))
        _close(fast(x, mask=_t(_masks("left"))), want)
        with pytest.raises(RuntimeError, match="torch backend"):
            fast(x, training=True)


def test_keras_masked_example_runs():
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "examples", "keras_masked.py")
    spec = importlib.util.spec_from_file_location("keras_masked_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--steps", "12", "--units", "8", "--repeats", "1"]) < 1e-5
