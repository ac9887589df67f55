"""Keras files as newcomers bring them: models mixing layers fastrnn runs with ones it does not
(SimpleRNN, Bidirectional merge_mode='sum', stateful, ...), nested models, every weight of a
model (embeddings, dense layers), and fastrnn layers written as `.keras` models. Models are
built here with Keras 3 on the torch backend, saved to tmp_path and compared with Keras' own
outputs."""
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastrnn
from fastrnn.io import keras as fk

B, T, I, H = 3, 6, 5, 4
MASK = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], bool)


@pytest.fixture(scope="module")
def keras():
    keras = pytest.importorskip("keras")
    if not keras.__version__.startswith("3."):
        pytest.skip(f"needs Keras 3, found {keras.__version__}")
    pytest.importorskip("h5py")
    return keras


def _quiet(call, *args, **kwargs):
    """A Keras call without the warnings Keras itself emits here: tensor -> array conversion
    under numpy 2 on the torch backend, legacy .h5 saving, and a mask handed to a functional
    model (Keras warns, yet passes the mask on to the layers)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*__array__")
        warnings.filterwarnings("ignore", category=UserWarning, message=".*HDF5.*legacy")
        warnings.filterwarnings("ignore", category=UserWarning, message=".*mask attached")
        return call(*args, **kwargs)


def _numpy(y):
    return np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)


def _x(seed, features=I, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=(B, T, features)).astype(dtype)


def _randomize(layer, seed):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(-0.6, 0.6, tuple(w.shape)).astype(np.float32)
                       for w in layer.weights])


def _keras_out(keras, layer, x, mask=None):
    kw = {} if mask is None else {"mask": keras.ops.convert_to_tensor(mask)}
    return _numpy(_quiet(layer, keras.ops.convert_to_tensor(x), **kw))


def _save(model, path):
    _quiet(model.save, path)
    return path


# ---- one unsupported layer does not block the others ------------------------------------------

@pytest.fixture(scope="module")
def mixed(keras, tmp_path_factory):
    """LSTM 'g', a nested Sequential with GRU 'inner', Bidirectional merge_mode='sum' 'bsum',
    SimpleRNN 'srnn', Dense 'proj'; saved as .keras, legacy .h5 and .weights.h5."""
    inner = keras.Sequential([keras.Input((None, I)),
                              keras.layers.GRU(H, return_sequences=True, name="inner")],
                             name="sub")
    inp = keras.Input((None, I))
    z = inner(inp)
    z = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True),
                                   merge_mode="sum", name="bsum")(z)
    z = keras.layers.SimpleRNN(H, return_sequences=True, name="srnn")(z)
    z = keras.layers.Dense(H, name="proj")(z)
    z = keras.layers.LSTM(H, return_sequences=True, name="g")(z)
    model = keras.Model(inp, z)
    for seed, layer in enumerate([model.get_layer("sub").get_layer("inner"),
                                  *model.layers[2:]]):
        _randomize(layer, seed)
    d = tmp_path_factory.mktemp("mixed")
    paths = {"keras": _save(model, d / "m.keras"), "h5": _save(model, d / "m.h5")}
    _quiet(model.save_weights, d / "m.weights.h5")
    paths["weights.h5"] = d / "m.weights.h5"
    return model, paths


def _sources(mixed, kinds=("object", "keras", "h5")):
    model, paths = mixed
    return [model if k == "object" else paths[k] for k in kinds]


@pytest.mark.parametrize("kind", ["object", "keras", "h5"])
def test_name_loads_that_layer_despite_an_unsupported_one(mixed, keras, kind):
    model = mixed[0]
    (source,) = _sources(mixed, [kind])
    x = _x(1)
    g = fk.from_keras(source, name="g")
    assert g.name == "g" and isinstance(g, fastrnn.LSTM)
    xg = _x(11, H)
    assert_allclose(g(xg)[0], _keras_out(keras, model.get_layer("g"), xg), atol=1e-6, rtol=0)
    inner = fk.from_keras(source, name="inner")  # inside the nested Sequential
    keras_inner = model.get_layer("sub").get_layer("inner")
    assert_allclose(inner(x, mask=MASK)[0], _keras_out(keras, keras_inner, x, MASK),
                    atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["object", "keras", "h5"])
def test_without_name_skips_unsupported_with_one_warning(mixed, kind):
    (source,) = _sources(mixed, [kind])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layers = fk.from_keras(source)
    assert list(layers) == ["inner", "g"]
    assert len(caught) == 1 and caught[0].category is UserWarning
    message = str(caught[0].message)
    assert "'bsum': Bidirectional merge_mode='sum'" in message
    assert "'srnn': SimpleRNN is not a supported" in message


@pytest.mark.parametrize("kind", ["object", "keras", "h5"])
def test_asking_for_an_unsupported_layer_says_why(mixed, kind):
    (source,) = _sources(mixed, [kind])
    with pytest.raises(ValueError, match="layer 'bsum' cannot be loaded: .*merge_mode='sum'"):
        fk.from_keras(source, name="bsum")
    with pytest.raises(KeyError, match="no recurrent layer named 'proj'"):
        fk.from_keras(source, name="proj")


@pytest.mark.parametrize("kind", ["object", "keras", "h5", "weights.h5"])
def test_describe_layers_lists_every_recurrent_layer(mixed, kind):
    (source,) = _sources(mixed, [kind])
    rows = {name: (text, why) for name, text, why in fk.describe_layers(source)}
    assert rows["g"][0].startswith("LSTM input_size=4 hidden_size=4") and rows["g"][1] is None
    assert rows["inner"][0].startswith("GRU input_size=5") and rows["inner"][1] is None
    assert rows["srnn"][0] is None and "SimpleRNN" in rows["srnn"][1]
    if kind == "weights.h5":  # no config: merge_mode is unknown, Keras' default assumed
        assert set(rows) == {"g", "inner", "bsum", "srnn"}
    else:
        assert list(rows) == ["inner", "bsum", "srnn", "g"]  # model order
        assert rows["bsum"][0] is None and "merge_mode='sum'" in rows["bsum"][1]


def test_weights_only_file_skips_the_simple_rnn(mixed, keras):
    model, paths = mixed
    with pytest.warns(UserWarning, match="'srnn': SimpleRNN"):
        layers = fk.from_keras(paths["weights.h5"])
    assert set(layers) == {"inner", "bsum", "g"}
    x = _x(2, H)
    assert_allclose(layers["g"](x)[0], _keras_out(keras, model.get_layer("g"), x), atol=1e-6,
                    rtol=0)


def _unsupported_models(keras):
    def seq(layer, shape=(None, I), batch=None):
        inp = keras.Input(shape, batch_size=batch)
        return keras.Model(inp, layer(inp))
    lstm = dict(units=H, return_sequences=True)
    yield "merge_mode='mul'", seq(keras.layers.Bidirectional(keras.layers.LSTM(**lstm),
                                                             merge_mode="mul", name="bad"))
    yield "merge_mode='ave'", seq(keras.layers.Bidirectional(keras.layers.GRU(**lstm),
                                                             merge_mode="ave", name="bad"))
    yield "merge_mode=None", seq(keras.layers.Bidirectional(keras.layers.GRU(**lstm),
                                                            merge_mode=None, name="bad"))
    yield "stateful=True", seq(keras.layers.LSTM(**lstm, stateful=True, name="bad"), batch=B)
    yield "activation='gelu'", seq(keras.layers.GRU(**lstm, activation="gelu", name="bad"))
    yield "ConvLSTM1D", seq(keras.layers.ConvLSTM1D(2, 3, return_sequences=True, name="bad"),
                            shape=(None, 7, 2))
    yield "SimpleRNN", seq(keras.layers.SimpleRNN(**lstm, name="bad"))
    yield "TimeDistributed", seq(keras.layers.TimeDistributed(keras.layers.LSTM(H), name="bad"),
                                 shape=(None, T, I))


def test_unsupported_configurations_are_named_with_their_reason(keras, tmp_path):
    """Each sibling configuration fastrnn cannot run: listed with its reason, refused by name,
    and a model holding nothing else is refused listing it (object and .keras file)."""
    for expected, model in _unsupported_models(keras):
        path = _save(model, tmp_path / "u.keras")
        for source in (model, path):
            rows = fk.describe_layers(source)
            assert [(n, text) for n, text, _ in rows] == [("bad", None)], expected
            assert expected in rows[0][2], (expected, rows)
            with pytest.raises(ValueError, match=f"layer 'bad' cannot be loaded: .*"
                                                 f"{expected.replace('(', '.').replace(')', '.')}"):
                fk.from_keras(source, name="bad")
            with pytest.raises(ValueError, match="no recurrent layer fastrnn can run: 'bad'"):
                fk.from_keras(source)


# ---- save_keras: a fastrnn layer as a Keras 3 model -------------------------------------------

SAVE_CASES = [
    dict(cls="LSTM", name="enc"),
    dict(cls="GRU", reset_after=False, masked_output="carry", activation="relu"),
    dict(cls="LSTM", num_layers=3, bidirectional=True, name="deep", use_bias=False),
    dict(cls="GRU", bidirectional=True, name="bi", dtype="float64",
         activations=["hard_sigmoid", "elu", "sigmoid", "softsign"]),
    dict(cls="LSTM", num_layers=2, recurrent_activation="hard_sigmoid", activation="softplus",
         masked_output="carry", dropout=0.25, recurrent_dropout=0.5, name="stack"),
]


@pytest.mark.parametrize("case", SAVE_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_save_keras_reloads_in_keras_and_fastrnn(keras, tmp_path, case):
    case = dict(case)
    layer = getattr(fastrnn, case.pop("cls"))(I, H, seed=7, init="torch", **case)
    path = tmp_path / "out.keras"
    fk.save_keras(layer, path)
    x = _x(3, dtype=layer.dtype)
    want, _ = layer(x, mask=MASK)
    model = _quiet(keras.models.load_model, path)
    assert_allclose(_keras_out(keras, model, x, MASK), want, atol=2e-6, rtol=0)
    back = fk.from_keras(path)
    assert back.name == (layer.name or layer._cell)
    assert repr(back) == repr(layer) if layer.name else repr(back).startswith(repr(layer)[:-1])
    assert back.dropout == layer.dropout and back.recurrent_dropout == layer.recurrent_dropout
    assert_allclose(back(x, mask=MASK)[0], want, atol=0, rtol=0)


def test_save_keras_any_file_name_and_the_layer_name(keras, tmp_path):
    layer = fastrnn.GRU(I, H, seed=1, name="enc/rnn.0")  # '/' and '.' are not Keras names
    fk.save_keras(layer, tmp_path / "model.bin")
    # Keras reads only ".keras" names: a copy under one
    (tmp_path / "copy.keras").write_bytes((tmp_path / "model.bin").read_bytes())
    model = _quiet(keras.models.load_model, tmp_path / "copy.keras")
    assert [lay.name for lay in model.layers][1:] == ["enc_rnn_0"]
    assert fastrnn.load(tmp_path / "model.bin").name == "enc_rnn_0"


def test_save_keras_refuses_what_keras_cannot_express(keras, tmp_path):
    path = tmp_path / "x.keras"
    refusals = [
        (fastrnn.LSTM(I, H, reverse=True), "go_backwards=True returns the outputs flipped"),
        (fastrnn.LSTM(I, H, peepholes=True), "peepholes"),
        (fastrnn.LSTM(I, H, proj_size=2), "proj_size"),
        (fastrnn.GRU(I, H, clip=3.0), "clip"),
        (fastrnn.GRU(I, H, recurrent_activation="hard_sigmoid", hard_sigmoid="keras2"),
         "Keras 2's 0.2 x"),
        (fastrnn.GRU(I, H, activation="leaky_relu"), "no activation leaky_relu"),
        (fastrnn.LSTM(I, H, activations=["sigmoid", "tanh", "relu"]),
         "one activation for the cell input and the output"),
    ]
    for layer, match in refusals:
        with pytest.raises(ValueError, match=match):
            fk.save_keras(layer, path)
        assert not path.exists()


def test_save_keras_bidirectional_carry_warns_and_differs_only_at_masked_steps(keras, tmp_path):
    layer = fastrnn.LSTM(I, H, bidirectional=True, masked_output="carry", seed=3)
    with pytest.warns(UserWarning, match="Bidirectional outputs zeros at masked steps"):
        fk.save_keras(layer, tmp_path / "b.keras")
    model = _quiet(keras.models.load_model, tmp_path / "b.keras")
    x = _x(4)
    got, want = _keras_out(keras, model, x, MASK), layer(x, mask=MASK)[0]
    assert_allclose(got[MASK], want[MASK], atol=1e-6, rtol=0)
    assert np.all(got[~MASK] == 0) and np.any(want[~MASK] != 0)
    assert fk.from_keras(tmp_path / "b.keras").masked_output == "zero"  # what the file computes


def test_stack_marker_needs_a_complete_consistent_stack(keras, tmp_path):
    """Layers named like a stack in a model that is not save_keras' stay separate layers."""
    inp = keras.Input((None, I))
    z = keras.layers.LSTM(H, return_sequences=True, name="a_layer0")(inp)
    z = keras.layers.LSTM(H, return_sequences=True, name="a_layer1")(z)
    layers = fk.from_keras(_save(keras.Model(inp, z, name="mine"), tmp_path / "s.keras"))
    assert list(layers) == ["a_layer0", "a_layer1"]
    z = keras.layers.GRU(H, return_sequences=True, name="b_layer0")(inp)
    z = keras.layers.LSTM(H, return_sequences=True, name="b_layer1")(z)
    model = keras.Model(inp, z, name=fk.STACK_MODEL_NAME)
    layers = fk.from_keras(_save(model, tmp_path / "t.keras"))
    assert list(layers) == ["b_layer0", "b_layer1"]  # GRU then LSTM: no stack


# ---- to_keras (the weight list) ---------------------------------------------------------------

def test_to_keras_stack_needs_a_layer_index(keras):
    """A stack's weights are several Keras layers' lists: one flat list could be taken by a
    Bidirectional layer of the same shapes without an error."""
    layer = fastrnn.GRU(H, H, num_layers=2, seed=5)
    with pytest.raises(ValueError, match="layer_index"):
        fk.to_keras(layer)
    with pytest.raises(ValueError, match="layer_index"):
        layer.to_keras()
    second = keras.layers.GRU(H, return_sequences=True)
    second.build((None, T, H))
    second.set_weights(fk.to_keras(layer, layer_index=1))
    x = _x(6, H)
    first = keras.layers.GRU(H, return_sequences=True)
    first.build((None, T, H))
    first.set_weights(fk.to_keras(layer, layer_index=0))
    want = _keras_out(keras, second, _keras_out(keras, first, x))
    assert_allclose(layer(x)[0], want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="layer_index must be in"):
        fk.to_keras(layer, layer_index=2)


# ---- all_weights ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_model(keras, tmp_path_factory):
    inp = keras.Input((None,), dtype="int32")
    z = keras.layers.Embedding(11, I, name="embedding")(inp)
    z = keras.layers.BatchNormalization(scale=False, name="bn")(z)
    z = keras.layers.LSTM(H, return_sequences=True, name="enc")(z)
    z = keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True), name="bi")(z)
    z = keras.layers.MultiHeadAttention(2, 3, name="mha")(z, z)
    z = keras.layers.Dense(2, name="dense")(z)
    model = keras.Model(inp, z)
    for i, layer in enumerate(model.layers):
        _randomize(layer, 10 + i)
    d = tmp_path_factory.mktemp("full")
    paths = {"keras": _save(model, d / "f.keras"), "h5": _save(model, d / "f.h5")}
    _quiet(model.save_weights, d / "f.weights.h5")
    paths["weights.h5"] = d / "f.weights.h5"
    return model, paths


def _expected_weights(model):
    g = model.get_layer
    bi = g("bi")
    return {
        "embedding/embeddings": g("embedding").embeddings,
        "bn/beta": g("bn").beta, "bn/moving_mean": g("bn").moving_mean,
        "bn/moving_variance": g("bn").moving_variance,
        "enc/lstm_cell/kernel": g("enc").cell.kernel,
        "enc/lstm_cell/recurrent_kernel": g("enc").cell.recurrent_kernel,
        "enc/lstm_cell/bias": g("enc").cell.bias,
        f"bi/{bi.forward_layer.name}/gru_cell/kernel": bi.forward_layer.cell.kernel,
        f"bi/{bi.backward_layer.name}/gru_cell/bias": bi.backward_layer.cell.bias,
        "mha/query/kernel": g("mha")._query_dense.kernel,
        "mha/attention_output/bias": g("mha")._output_dense.bias,
        "dense/kernel": g("dense").kernel, "dense/bias": g("dense").bias,
    }


@pytest.mark.parametrize("kind", ["object", "keras", "h5"])
def test_all_weights_by_readable_names(full_model, kind):
    model, paths = full_model
    weights = fk.all_weights(model if kind == "object" else paths[kind])
    assert all(isinstance(a, np.ndarray) for a in weights.values())
    for name, variable in _expected_weights(model).items():
        assert_allclose(weights[name], _numpy(variable.value), rtol=0, atol=0, err_msg=name)
    assert len(weights) == len(model.weights)


def test_all_weights_of_a_weights_only_file(full_model):
    """No config: names come from Keras' group names; BatchNormalization(scale=False)'s three
    variables cannot be told apart without it and keep their numbers."""
    model, paths = full_model
    weights = fk.all_weights(paths["weights.h5"])
    expected = _expected_weights(model)
    forward = f"bi/{model.get_layer('bi').forward_layer.name}/gru_cell/kernel"
    for name in ("embedding/embeddings", "enc/lstm_cell/kernel", forward, "mha/query/kernel",
                 "dense/bias"):
        assert_allclose(weights[name], _numpy(expected[name].value), rtol=0, atol=0)
    assert_allclose(weights["bn/1"], _numpy(model.get_layer("bn").moving_mean.value))
    assert len(weights) == len(model.weights)


def test_all_weights_refuses_other_files(tmp_path):
    (tmp_path / "x").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a Keras file"):
        fk.all_weights(tmp_path / "x")
