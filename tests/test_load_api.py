"""The loading and saving entry points' contract: what they return, what they refuse.

`load` / `from_*` return one layer whatever the source holds (several: a ValueError that names
them); `load_all` always a dict; `load_weights` every array of a source, recurrent or not;
`save` / `convert` write the format the extension names and refuse one they cannot tell.
"""
import os
import warnings

import numpy as np
import pytest

import fastrnn

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture(name):
    return os.path.join(FIXTURES, name)


def _batch(layer, B=3, T=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, layer.input_size)).astype(layer.dtype)
    return x, np.array([T, 2, 4][:B])


def test_load_returns_one_layer_and_names_the_choices():
    pytest.importorskip("h5py", reason="reading .keras weights needs h5py (fastrnn[keras])")
    path = fixture("keras_model.keras")
    with pytest.raises(ValueError, match=r"6 recurrent layers \(lstm_a, gru_rb, .*load_all"):
        fastrnn.load(path)
    layer = fastrnn.load(path, name="bigru")
    assert isinstance(layer, fastrnn.GRU) and layer.name == "bigru" and layer.bidirectional
    layers = fastrnn.load_all(path)
    assert list(layers)[:2] == ["lstm_a", "gru_rb"] and len(layers) == 6
    assert all(isinstance(v, (fastrnn.LSTM, fastrnn.GRU)) for v in layers.values())


@pytest.mark.parametrize("ext", ["npz", "frnn"])
def test_single_layer_files_give_a_layer_and_a_one_entry_dict(tmp_path, ext):
    layer = fastrnn.GRU(3, 5, seed=1, name="enc")
    path = tmp_path / f"g.{ext}"
    layer.save(path)
    loaded = fastrnn.load(path)
    assert isinstance(loaded, fastrnn.GRU)
    everything = fastrnn.load_all(path)
    assert list(everything) == ["enc"] and isinstance(everything["enc"], fastrnn.GRU)
    unnamed = tmp_path / f"u.{ext}"
    fastrnn.LSTM(3, 4).save(unnamed)
    assert list(fastrnn.load_all(unnamed)) == ["layer"]


def test_frnn_load_honours_dtype(tmp_path):
    layer = fastrnn.LSTM(3, 4, seed=2, masked_output="carry", name="l")
    path = tmp_path / "l.frnn"
    layer.save(path)
    wide = fastrnn.load(path, dtype="float64")
    assert wide.dtype == np.float64 and wide.masked_output == "carry" and wide.name == "l"
    x, lengths = _batch(layer)
    np.testing.assert_allclose(wide(x.astype(np.float64), lengths=lengths)[0],
                               layer(x, lengths=lengths)[0], atol=1e-6)


def test_save_refuses_an_extension_that_names_no_format(tmp_path):
    layer = fastrnn.LSTM(3, 4)
    with pytest.raises(ValueError, match=r"extension .*\.bin.*format="):
        fastrnn.save(layer, tmp_path / "model.bin")
    assert not (tmp_path / "model.bin").exists()
    fastrnn.save(layer, tmp_path / "model.bin", format="npz")
    assert fastrnn.io.detect_format(tmp_path / "model.bin") == "npz"
    with pytest.raises(ValueError, match="unknown format"):
        fastrnn.save(layer, tmp_path / "m.npz", format="hdf5")
    with pytest.raises(ValueError, match="sequence_lens"):
        fastrnn.save(layer, tmp_path / "m.npz", sequence_lens=True)


def test_save_onnx_with_sequence_lens_option(tmp_path):
    onnx = pytest.importorskip("onnx")
    layer = fastrnn.LSTM(3, 4, seed=3)
    fastrnn.save(layer, tmp_path / "l.onnx", sequence_lens=True)
    model = onnx.load(str(tmp_path / "l.onnx"))
    assert "sequence_lens" in [i.name for i in model.graph.input]


def test_convert_to_keras_writes_a_keras_file(tmp_path):
    torch = pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 4, batch_first=True)
    src = tmp_path / "lstm_sd.pt"
    torch.save(module.state_dict(), src)
    layer = fastrnn.convert(src, tmp_path / "a.keras")
    assert fastrnn.io.detect_format(tmp_path / "a.keras") == "keras"
    model = keras.models.load_model(tmp_path / "a.keras")
    x = np.random.default_rng(4).standard_normal((2, 5, 3)).astype(np.float32)
    expect = module(torch.from_numpy(x))[0].detach().numpy()
    y = model(x)
    y = y.detach().cpu().numpy() if hasattr(y, "detach") else np.asarray(y)
    np.testing.assert_allclose(y, expect, atol=1e-5)
    np.testing.assert_allclose(layer(x)[0], expect, atol=1e-5)


def test_to_torch_returns_a_ready_module():
    torch = pytest.importorskip("torch")
    layer = fastrnn.GRU(3, 5, num_layers=2, bidirectional=True, seed=5)
    module = layer.to_torch()
    assert isinstance(module, torch.nn.GRU) and module.batch_first
    x, _ = _batch(layer)
    with torch.no_grad():
        out, h = module(torch.from_numpy(x))
    y, h_n = layer(x)
    np.testing.assert_allclose(out.numpy(), y, atol=1e-5)
    np.testing.assert_allclose(h.numpy(), h_n, atol=1e-5)
    sd = layer.to_torch_state_dict()
    assert set(sd) == set(module.state_dict())


def test_load_weights_torch_keeps_the_non_recurrent_weights(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("embedding", torch.nn.Embedding(10, 3))
    model.add_module("rnn", torch.nn.LSTM(3, 4, batch_first=True))
    model.add_module("head", torch.nn.Linear(4, 2))
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    for source in (path, model, model.state_dict()):
        weights = fastrnn.load_weights(source)
        assert set(weights) == set(model.state_dict())
        np.testing.assert_array_equal(weights["embedding.weight"],
                                      model.embedding.weight.detach().numpy())
        np.testing.assert_array_equal(weights["head.bias"], model.head.bias.detach().numpy())
    assert fastrnn.load(path).name == "rnn"


def test_load_weights_keras_keeps_the_non_recurrent_weights(tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("h5py")
    model = keras.Sequential([keras.Input((None,)),
                              keras.layers.Embedding(10, 3, name="embedding"),
                              keras.layers.LSTM(4, name="rnn"),
                              keras.layers.Dense(2, name="dense")])
    path = tmp_path / "model.keras"
    with warnings.catch_warnings():  # Keras' saver on the torch backend, with numpy 2
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*__array__")
        model.save(path)
    weights = fastrnn.load_weights(path)
    def numpy(v):  # keras variables on the torch backend hold tensors
        v = getattr(v, "value", v)
        return v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
    embeddings = numpy(model.get_layer("embedding").embeddings)
    kernel, bias = (numpy(v) for v in (model.get_layer("dense").kernel,
                                       model.get_layer("dense").bias))
    np.testing.assert_array_equal(weights["embedding/embeddings"], embeddings)
    np.testing.assert_array_equal(weights["dense/kernel"], kernel)
    np.testing.assert_array_equal(weights["dense/bias"], bias)
    assert fastrnn.load(path).name == "rnn"


def test_load_weights_onnx_tf1_and_own_formats(tmp_path):
    layer = fastrnn.LSTM(3, 4, seed=6)
    layer.save(tmp_path / "l.npz")
    weights = fastrnn.load_weights(tmp_path / "l.npz")
    assert set(weights) == set(layer.state_dict())
    np.testing.assert_array_equal(weights["layer0.forward.cell.kernel"],
                                  layer.gate("cell").kernel)
    tf = fastrnn.load_weights(fixture("tf1_cells.ckpt"))
    assert tf and all(isinstance(v, np.ndarray) for v in tf.values())
    assert any(k.endswith("lstm_cell/kernel") for k in tf)
    pytest.importorskip("onnx")
    layer.to_onnx(tmp_path / "l.onnx")
    onnx_weights = fastrnn.load_weights(tmp_path / "l.onnx")
    assert any(v.shape == (1, 16, 3) for v in onnx_weights.values())  # W: (D, 4H, I)


def test_load_all_refuses_what_it_cannot_read():
    with pytest.raises(TypeError, match="PyTorch module or state_dict"):
        fastrnn.load_all(3.5)


@pytest.mark.parametrize("loader", ["from_keras", "from_onnx", "from_torch",
                                    "from_tf_checkpoint"])
def test_a_file_given_to_the_wrong_loader_is_named(tmp_path, loader):
    path = tmp_path / "l.npz"
    fastrnn.LSTM(3, 4).save(path)
    with pytest.raises(ValueError, match=r"is a fastrnn \.npz file.*fastrnn\.load\(\)"):
        getattr(fastrnn, loader)(path)


def test_an_unbatched_input_gets_a_hint():
    layer = fastrnn.LSTM(8, 4)
    with pytest.raises(ValueError, match=r"add the batch axis: x\[None\]"):
        layer(np.ones((5, 8)))
    with pytest.raises(ValueError, match=r"add the batch axis: x_t\[None\]"):
        layer.step(np.ones(8))


def test_inspect_lists_unsupported_keras_layers_with_the_reason(tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("h5py")
    model = keras.Sequential([
        keras.Input((None, 3)),
        keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True),
                                   merge_mode="sum", name="summed"),
        keras.layers.GRU(5, return_sequences=True, name="g")])
    path = tmp_path / "m.keras"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*__array__")
        model.save(path)
    lines = dict(fastrnn.io.inspect(path))
    assert list(lines) == ["summed", "g"]
    assert lines["summed"].startswith("unsupported: ") and "sum" in lines["summed"]
    assert lines["g"].startswith("GRU")
    assert fastrnn.load(path, name="g").hidden_size == 5
