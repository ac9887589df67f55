"""Loaders of cell variants against the frameworks that wrote the files: Keras activations
(Keras 3 files made here with keras on the torch backend, a Keras 2 file in tests/fixtures made
by tf_keras with its own outputs), TF1 LSTMCell peepholes and cell_clip (tests/fixtures, made by
TensorFlow, and a checkpoint written here with tests/tf_checkpoint_writer.py checked against the
numpy reference)."""
import io
import json
import os
import warnings
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastrnn
from fastrnn.io.keras import hard_sigmoid_flavour

HERE = os.path.join(os.path.dirname(__file__), "fixtures")
ATOL = 1e-6  # float32 outputs of |y| ~ 1, T <= 6 (tests/test_io_fixtures.py)


def fixture(name):
    return os.path.join(HERE, name)


def expected(name):
    with np.load(fixture(name + ".expected.npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _numpy(y):
    return np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)


def _quiet(call, *args, **kwargs):
    """Run a Keras call without the warnings Keras on the torch backend emits under numpy 2
    (tensor -> array conversion) and for legacy .h5 saving."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*__array__")
        warnings.filterwarnings("ignore", category=UserWarning, message=".*HDF5.*legacy")
        return call(*args, **kwargs)


def _chain(layers, names, e, atol=ATOL):
    inp = e["x"]
    for name in names:
        layer = layers[name]
        y, _ = layer(inp, mask=e["mask"])
        if layer.reverse:
            y = y[:, ::-1]
        assert_allclose(y, e[f"y_{name}"], atol=atol, rtol=0, err_msg=name)
        inp = e[f"y_{name}"]


# ---- Keras 3 (torch backend; tests/conftest.py sets KERAS_BACKEND) ------------------------------

B, T, I, H = 3, 6, 3, 4
KERAS3_NAMES = ["relu_gru", "hs_lstm", "bi_softsign", "lin_elu_gru", "back_hs_gru"]


@pytest.fixture(scope="module")
def keras3_model():
    keras = pytest.importorskip("keras")
    if not keras.__version__.startswith("3."):
        pytest.skip(f"needs Keras 3, found {keras.__version__}")
    rng = np.random.default_rng(31)
    inp = keras.Input((T, I))
    z = keras.layers.Masking(0.0)(inp)
    z = keras.layers.GRU(H, return_sequences=True, activation="relu", name="relu_gru")(z)
    z = keras.layers.LSTM(H, return_sequences=True, recurrent_activation="hard_sigmoid",
                          name="hs_lstm")(z)
    z = keras.layers.Bidirectional(
        keras.layers.LSTM(H, return_sequences=True, activation="softsign",
                          recurrent_activation="relu"), name="bi_softsign")(z)
    z = keras.layers.GRU(H, return_sequences=True, activation="linear", reset_after=False,
                         recurrent_activation="hard_sigmoid", name="lin_elu_gru")(z)
    z = keras.layers.GRU(H, return_sequences=True, activation="elu", go_backwards=True,
                         recurrent_activation="hard_sigmoid", name="back_hs_gru")(z)
    model = keras.Model(inp, z)
    # weights large enough that gate pre-activations reach the saturated parts of hard_sigmoid
    # and relu, where Keras 2's and Keras 3's hard_sigmoid differ most
    model.set_weights([rng.uniform(-1.2, 1.2, tuple(w.shape)).astype(np.float32)
                       for w in model.weights])
    x = rng.normal(0, 1.5, (B, T, I)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1]], bool)
    x[~mask] = 0.0
    probe = keras.Model(inp, [model.get_layer(n).output for n in KERAS3_NAMES])
    outs = _quiet(probe.predict, x, verbose=0)
    e = dict(x=x, mask=mask, **{f"y_{n}": _numpy(o) for n, o in zip(KERAS3_NAMES, outs)})
    return keras, model, e


def test_keras3_objects_with_activations(keras3_model):
    keras, model, e = keras3_model
    layers = fastrnn.load_all(model)
    assert list(layers) == KERAS3_NAMES
    assert layers["hs_lstm"].activations[0][0] == ("hard_sigmoid", pytest.approx(1 / 6), 0.5)
    assert layers["relu_gru"].activations[0] == (("sigmoid", None, None), ("relu", None, None))
    assert layers["bi_softsign"].activations[1][2] == ("softsign", None, None)
    _chain(layers, KERAS3_NAMES, e)


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_keras3_files_with_activations(keras3_model, tmp_path, ext):
    pytest.importorskip("h5py")
    keras, model, e = keras3_model
    path = tmp_path / f"model.{ext}"
    _quiet(model.save, path)
    layers = fastrnn.load_all(path)
    assert list(layers) == KERAS3_NAMES
    assert layers["hs_lstm"].activations[0][0][1] == pytest.approx(1 / 6)   # Keras 3 meaning
    assert layers["back_hs_gru"].reverse and layers["bi_softsign"].masked_output == "zero"
    assert layers["relu_gru"].masked_output == "carry"
    _chain(layers, KERAS3_NAMES, e)


def test_keras3_unsupported_activation_is_refused(keras3_model):
    keras = keras3_model[0]
    layer = keras.layers.LSTM(H, activation="gelu")
    layer.build((None, T, I))
    with pytest.raises(ValueError, match=r"activation='gelu'.*tanh, sigmoid, hard_sigmoid, "
                                         r"relu, linear, softsign, elu"):
        fastrnn.from_keras(layer)
    gru = keras.layers.GRU(H, recurrent_activation="softmax")
    gru.build((None, T, I))
    with pytest.raises(ValueError, match="recurrent_activation='softmax'"):
        fastrnn.from_keras(gru)


def _rewrite_keras_zip(data, keras_version):
    """A .keras zip with metadata.json's keras_version replaced (None: removed)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            content = src.read(item.filename)
            if item.filename == "metadata.json":
                meta = json.loads(content)
                if keras_version is None:
                    meta.pop("keras_version")
                else:
                    meta["keras_version"] = keras_version
                content = json.dumps(meta).encode()
            dst.writestr(item, content)
    return out.getvalue()


@pytest.mark.parametrize("version,alpha", [("2.15.0", 0.2), ("3.1.0", 1 / 6), (None, 1 / 6)])
def test_keras_zip_version_decides_hard_sigmoid(keras3_model, tmp_path, version, alpha):
    """tf.keras 2.13-2.15 wrote .keras zips too: metadata.json's keras_version decides."""
    pytest.importorskip("h5py")
    model = keras3_model[1]
    _quiet(model.save, tmp_path / "m.keras")
    data = _rewrite_keras_zip((tmp_path / "m.keras").read_bytes(), version)
    layer = fastrnn.from_keras(data, name="hs_lstm")
    assert layer.activations[0][0] == ("hard_sigmoid", pytest.approx(alpha), 0.5)


@pytest.mark.parametrize("version,alpha", [("2.2.4", 0.2), ("3.15.1", 1 / 6), (None, 0.2)])
def test_h5_version_decides_hard_sigmoid(keras3_model, tmp_path, version, alpha):
    h5py = pytest.importorskip("h5py")
    model = keras3_model[1]
    _quiet(model.save, tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5", "a") as f:
        for group in (f, f["model_weights"]):
            if version is None:
                del group.attrs["keras_version"]
            else:
                group.attrs["keras_version"] = version
    layer = fastrnn.from_keras(tmp_path / "m.h5", name="hs_lstm")
    assert layer.activations[0][0] == ("hard_sigmoid", pytest.approx(alpha), 0.5)


def test_keras_bidirectional_halves_with_different_activations():
    """A Bidirectional whose backward_layer has its own activations: per direction."""
    from fastrnn.io.keras import layer_from_config
    rng = np.random.default_rng(0)
    k, r, b = rng.normal(size=(3, 16)), rng.normal(size=(4, 16)), rng.normal(size=16)
    layer = layer_from_config("Bidirectional", {
        "layer": {"class_name": "LSTM", "config": {"activation": "relu",
                                                    "recurrent_activation": "hard_sigmoid"}},
        "backward_layer": {"class_name": "LSTM", "config": {"go_backwards": True,
                                                             "activation": "elu"}}},
        [k, r, b] * 2, hard_sigmoid="keras2")
    assert layer.activations == (
        (("hard_sigmoid", 0.2, 0.5), ("relu", None, None), ("relu", None, None)),
        (("sigmoid", None, None), ("elu", 1.0, None), ("elu", 1.0, None)))
    plain = layer_from_config("LSTM", {"activation": None}, [k, r, b])  # None: the identity
    assert plain.activations[0][1] == ("linear", None, None)
    with pytest.raises(ValueError, match="cuDNN layers only run tanh / sigmoid"):
        layer_from_config("CuDNNLSTM", {"activation": "relu"}, [k, r, np.zeros(32)])


def test_hard_sigmoid_flavour():
    assert hard_sigmoid_flavour("2.21.0", "keras3") == "keras2"
    assert hard_sigmoid_flavour(b"2.4.0-tf", "keras3") == "keras2"
    assert hard_sigmoid_flavour("1.2.2", "keras3") == "keras2"
    assert hard_sigmoid_flavour("3.0.0", "keras2") == "keras3"
    assert hard_sigmoid_flavour(None, "keras2") == "keras2"
    assert hard_sigmoid_flavour("", "keras3") == "keras3"
    assert hard_sigmoid_flavour("unknown", "keras3") == "keras3"


# ---- Keras 2 (tf_keras) file with hard_sigmoid ------------------------------------------------

KERAS2_NAMES = ["k2_default_lstm", "k2_default_gru", "k2_relu_gru", "k2_bi_elu"]


def test_keras2_hard_sigmoid_h5():
    """Keras 2's default LSTM / GRU (recurrent_activation hard_sigmoid = clip(0.2 x + 0.5)),
    relu and elu, masked, against tf_keras's own outputs."""
    pytest.importorskip("h5py")
    e = expected("keras2_hard_sigmoid")
    layers = fastrnn.load_all(fixture("keras2_hard_sigmoid.h5"))
    assert list(layers) == KERAS2_NAMES
    for name in KERAS2_NAMES:
        for acts in layers[name].activations:
            assert acts[0] == ("hard_sigmoid", 0.2, 0.5), name
    assert layers["k2_default_gru"].reset_after is False
    assert layers["k2_bi_elu"].activations[1][1] == ("elu", 1.0, None)
    _chain(layers, KERAS2_NAMES, e)


def test_keras2_hard_sigmoid_fixture_tells_the_definitions_apart():
    """The fixture's inputs reach where 0.2 x + 0.5 and x / 6 + 0.5 differ: read with Keras 3's
    meaning, the outputs would be off by far more than the tolerance."""
    pytest.importorskip("h5py")
    e = expected("keras2_hard_sigmoid")
    layer = fastrnn.from_keras(fixture("keras2_hard_sigmoid.h5"), name="k2_default_lstm")
    config = layer.variant_config()
    config["activations"] = [("hard_sigmoid", 1 / 6, 0.5) if a[0] == "hard_sigmoid" else a
                             for a in config["activations"]]
    wrong = fastrnn.LSTM(layer.input_size, layer.hidden_size, masked_output="carry", **config)
    wrong.load_state_dict(layer.state_dict())
    y, _ = wrong(e["x"], mask=e["mask"])
    assert np.abs(y - e["y_k2_default_lstm"]).max() > 1e-2


# ---- TF1 LSTMCell(use_peepholes, cell_clip, num_proj, proj_clip) ------------------------------

TF1_VARIANTS = {  # expected key -> (scope, num_layers, bidirectional, features, clips given)
    "peep": ("peep/rnn", 1, False, ["peepholes"], ()),
    "clip": ("clip/rnn", 1, False, ["cell_clip"], ("cell_clip",)),
    "multi": ("multi/rnn/multi_rnn_cell", 2, False, ["cell_clip", "peepholes"], ("cell_clip",)),
    "bi": ("bi/bidirectional_rnn", 1, True, ["cell_clip", "peepholes"], ("cell_clip",)),
    "proj": ("proj/rnn", 1, False, ["cell_clip", "peepholes", "proj_size", "proj_clip"],
             ("cell_clip", "proj_clip")),
    "proj_noclip": ("proj_noclip/rnn", 1, False, ["proj_size"], ()),
    "multi_proj": ("multi_proj/rnn/multi_rnn_cell", 2, False,
                   ["cell_clip", "peepholes", "proj_size", "proj_clip"], ("cell_clip", "proj_clip")),
    "bi_proj": ("bi_proj/bidirectional_rnn", 1, True,
                ["cell_clip", "peepholes", "proj_size", "proj_clip"], ("cell_clip", "proj_clip")),
}


@pytest.mark.parametrize("key", list(TF1_VARIANTS))
def test_tf1_lstm_cell_variants(key):
    """TF's own dynamic_rnn / bidirectional_dynamic_rnn outputs (sequence_length) of LSTMCell
    with peepholes, cell_clip and num_proj / proj_clip, alone and stacked."""
    from_tf_checkpoint = fastrnn.from_tf_checkpoint  # the public wrapper forwards the clips
    e = expected("tf1_variants")
    scope, L, bi, features, clips = TF1_VARIANTS[key]
    kw = {c: float(e[c]) for c in clips}
    layer = from_tf_checkpoint(fixture("tf1_variants.ckpt"), scope=scope, **kw)
    assert (type(layer).__name__, layer.num_layers, layer.bidirectional) == ("LSTM", L, bi)
    assert layer.variant_features == features
    assert layer.masked_output == "zero"
    y, _ = layer(e["x"], lengths=e["lengths"])
    assert_allclose(y, e[f"y_{key}"], atol=ATOL, rtol=0)
    if clips:  # the clips are active in the fixture: without them the outputs differ
        plain = from_tf_checkpoint(fixture("tf1_variants.ckpt"), scope=scope)
        assert np.abs(plain(e["x"], lengths=e["lengths"])[0] - e[f"y_{key}"]).max() > 1e-2


def test_tf1_variant_checkpoint_loads_whole():
    e = expected("tf1_variants")
    layers = fastrnn.load_all(fixture("tf1_variants.ckpt"))  # no clips: peepholes and projections
    assert sorted(layers) == sorted(s for s, *_ in TF1_VARIANTS.values())
    assert layers["proj/rnn"].proj_size == 2 and layers["peep/rnn"].peepholes
    y, _ = layers["peep/rnn"](e["x"], lengths=e["lengths"])
    assert_allclose(y, e["y_peep"], atol=ATOL, rtol=0)


def test_tf1_clip_arguments_are_checked():
    from fastrnn.io.tf1 import from_tf_checkpoint
    with pytest.raises(ValueError, match="proj_clip.*no cell here has a projection"):
        from_tf_checkpoint(fixture("tf1_variants.ckpt"), scope="clip/rnn", proj_clip=0.5)
    with pytest.raises(ValueError, match="cell_clip is an LSTMCell option.*no LSTM"):
        from_tf_checkpoint(fixture("tf1_cells.ckpt"), scope="gru/rnn", cell_clip=1.0)
    with pytest.raises(ValueError, match="cell_clip"):
        from_tf_checkpoint(fixture("tf1_variants.ckpt"), scope="clip/rnn", cell_clip=-1.0)
    # several layers: cell_clip goes to every LSTM among them
    layers = from_tf_checkpoint(fixture("tf1_variants.ckpt"), cell_clip=0.5)
    assert len(layers) == len(TF1_VARIANTS)
    assert all(layer.cell_clip == 0.5 for layer in layers.values())


def _tf1_cell_variables(rng, root, I, H, P=0, peepholes=True, diags=("w_i_diag", "w_f_diag",
                                                                      "w_o_diag")):
    v = {f"{root}/kernel": rng.uniform(-0.8, 0.8, (I + (P or H), 4 * H)).astype(np.float32),
         f"{root}/bias": rng.uniform(-0.8, 0.8, 4 * H).astype(np.float32)}
    if peepholes:
        for d in diags:
            v[f"{root}/{d}"] = rng.uniform(-0.8, 0.8, H).astype(np.float32)
    if P:
        v[f"{root}/projection/kernel"] = rng.uniform(-0.8, 0.8, (H, P)).astype(np.float32)
    return v


def test_tf1_peephole_mapping_vs_numpy_reference(tmp_path):
    """Variable names as TF1's LSTMCell writes them (kernel rows [x; h], columns i, j, f, o;
    w_i_diag, w_f_diag, w_o_diag), a checkpoint made by tests/tf_checkpoint_writer.py, checked
    against the numpy reference with its own reading of those names."""
    from reference import rnn_forward
    from tf_checkpoint_writer import write_checkpoint
    from fastrnn.io.tf1 import from_tf_checkpoint
    rng = np.random.default_rng(5)
    I_, H_, forget_bias, cell_clip = 3, 5, 1.0, 0.6
    root = "enc/rnn/multi_rnn_cell/cell_{}/lstm_cell"
    v = {**_tf1_cell_variables(rng, root.format(0), I_, H_),
         **_tf1_cell_variables(rng, root.format(1), H_, H_)}
    write_checkpoint(str(tmp_path / "m.ckpt"), v)
    layer = from_tf_checkpoint(str(tmp_path / "m.ckpt"), cell_clip=cell_clip, dtype=np.float64)
    params = {}
    for k in range(2):
        r = root.format(k)
        n_in = I_ if k == 0 else H_
        kernel, bias = v[f"{r}/kernel"].astype(np.float64), v[f"{r}/bias"].astype(np.float64)
        for block, gate in enumerate(("input", "cell", "forget", "output")):  # TF: i, j, f, o
            cols = slice(block * H_, (block + 1) * H_)
            params[f"layer{k}.forward.{gate}.kernel"] = kernel[:n_in, cols]
            params[f"layer{k}.forward.{gate}.recurrent"] = kernel[n_in:, cols]
            # TF adds forget_bias at run time; a float32 checkpoint's bias stays float32
            params[f"layer{k}.forward.{gate}.bias"] = (bias[cols] + (
                forget_bias if gate == "forget" else 0.0)).astype(np.float32).astype(np.float64)
        for d, gate in (("w_i_diag", "input"), ("w_f_diag", "forget"), ("w_o_diag", "output")):
            params[f"layer{k}.forward.{gate}.peephole"] = v[f"{r}/{d}"].astype(np.float64)
    x = rng.normal(0, 1.5, (4, 6, I_))
    lengths = np.array([6, 3, 0, 5])
    mask = np.arange(6)[None, :] < lengths[:, None]
    ref, (h_ref, c_ref) = rnn_forward("lstm", params, x, hidden_size=H_, num_layers=2,
                                      mask=mask, peepholes=True, cell_clip=cell_clip)
    y, (h, c) = layer(x, lengths=lengths)
    assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert_allclose(c, c_ref, rtol=1e-12, atol=1e-12)
    assert np.abs(c_ref).max() == pytest.approx(cell_clip)  # the clip is active


def test_tf1_bad_peephole_and_projection_variables(tmp_path):
    from tf_checkpoint_writer import write_checkpoint
    from fastrnn.io.tf1 import from_tf_checkpoint
    rng = np.random.default_rng(6)
    cases = [
        (_tf1_cell_variables(rng, "a/rnn/lstm_cell", 3, 4, diags=("w_i_diag", "w_f_diag")),
         "not all of w_i_diag, w_f_diag, w_o_diag"),
        ({**_tf1_cell_variables(rng, "a/rnn/lstm_cell", 3, 4, peepholes=False),
          "a/rnn/lstm_cell/w_i_diag": np.zeros(5, np.float32),
          "a/rnn/lstm_cell/w_f_diag": np.zeros(5, np.float32),
          "a/rnn/lstm_cell/w_o_diag": np.zeros(5, np.float32)}, r"w_i_diag has shape \(5,\)"),
        ({**_tf1_cell_variables(rng, "a/rnn/lstm_cell", 3, 4, P=2),
          "a/rnn/lstm_cell/projection/kernel": np.zeros((3, 2), np.float32)},
         r"projection/kernel has shape \(3, 2\), expected \(4, num_proj\)"),
    ]
    for k, (variables, match) in enumerate(cases):
        prefix = str(tmp_path / f"bad{k}.ckpt")
        write_checkpoint(prefix, variables)
        with pytest.raises(ValueError, match=match):
            from_tf_checkpoint(prefix)
