"""Loaders against files written by the real frameworks (tests/fixtures, made by the seeded
make_*.py scripts there), compared with the outputs those frameworks computed themselves.

No framework runs here: torch is needed only to read `.pt` files, h5py for Keras files and onnx
for ONNX files. Tolerance: 1e-6 absolute on float32 outputs (|y| < 1, T = 5); fastrnn's float32
activations differ from libm by < 4e-7 and observed errors are ~1e-7.
"""
import os

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastrnn

HERE = os.path.join(os.path.dirname(__file__), "fixtures")
ATOL = 1e-6


def fixture(name):
    return os.path.join(HERE, name)


def expected(name):
    with np.load(fixture(name + ".expected.npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def run_chain(layers, x, **kw):
    """Chain several layers (ONNX exports of stacked torch modules: one node per layer)."""
    if not isinstance(layers, dict):
        return layers(x, **kw)[0]
    for layer in layers.values():
        x = layer(x, **kw)[0]
    return x


# ---- PyTorch -------------------------------------------------------------------------------

TORCH_FILES = [("torch_lstm_stacked_bi", "pt"), ("torch_lstm_stacked_bi", "safetensors"),
               ("torch_gru_stacked_bi", "pt"), ("torch_gru_stacked_bi", "safetensors"),
               ("torch_lstm", "pt"), ("torch_gru", "safetensors")]


@pytest.mark.parametrize("name,ext", TORCH_FILES)
def test_torch_files(name, ext):
    if ext == "pt":
        pytest.importorskip("torch")
    e = expected(name)
    layer = fastrnn.load(fixture(f"{name}.{ext}"))
    assert fastrnn.io.detect_format(fixture(f"{name}.{ext}")) == \
        ("torch" if ext == "pt" else "safetensors")
    assert layer.dtype == np.float32 and layer.masked_output == "zero"
    assert layer.bidirectional == ("_bi" in name)
    y, state = layer(e["x"], lengths=e["lengths"])
    assert_allclose(y, e["y"], atol=ATOL, rtol=0)
    h = state[0] if "lstm" in name else state
    assert_allclose(h, e["h"], atol=ATOL, rtol=0)
    if "lstm" in name:
        assert_allclose(state[1], e["c"], atol=ATOL, rtol=0)


def test_safetensors_without_torch_or_safetensors_package():
    """The safetensors reader is ours: it must not import torch or safetensors."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None; sys.modules['safetensors'] = None\n"
            "import fastrnn\n"
            f"l = fastrnn.load({fixture('torch_gru.safetensors')!r}); print(type(l).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "GRU"


# ---- Keras ---------------------------------------------------------------------------------

KERAS3_LAYERS = {  # name -> (cell, bidirectional, reverse, masked_output, reset_after)
    "lstm_a": ("LSTM", False, False, "carry", None),
    "gru_rb": ("GRU", False, False, "carry", False),
    "bigru": ("GRU", True, False, "zero", True),
    "back_lstm": ("LSTM", False, True, "carry", None),
    "bilstm": ("LSTM", True, False, "zero", None),
    "back_gru": ("GRU", False, True, "carry", False),
}


def _check_keras_chain(layers, e, names, spec=None):
    inp = e["x"]
    for name in names:
        layer = layers[name]
        if spec:
            cell, bi, rev, masked, reset_after = spec[name]
            assert type(layer).__name__ == cell and layer.bidirectional == bi
            assert layer.reverse == rev and layer.masked_output == masked
            if reset_after is not None:
                assert layer.reset_after == reset_after
        y, _ = layer(inp, mask=e["mask"])
        if layer.reverse:  # Keras returns a go_backwards layer's outputs in processing order
            y = y[:, ::-1]
        assert_allclose(y, e[f"y_{name}"], atol=ATOL, rtol=0, err_msg=name)
        inp = e[f"y_{name}"]


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_keras3_files(ext):
    pytest.importorskip("h5py")
    e = expected("keras_model")
    layers = fastrnn.load_all(fixture(f"keras_model.{ext}"))
    assert list(layers) == list(KERAS3_LAYERS)  # user names, model order
    _check_keras_chain(layers, e, KERAS3_LAYERS, KERAS3_LAYERS)
    one = fastrnn.from_keras(fixture(f"keras_model.{ext}"), name="bigru")
    assert one.name == "bigru" and one.bidirectional


def test_keras3_weights_h5_without_config():
    """A .weights.h5 has no config: go_backwards is unknown (default False), the rest holds."""
    pytest.importorskip("h5py")
    e = expected("keras_model")
    layers = fastrnn.load_all(fixture("keras_model.weights.h5"))
    assert set(layers) == set(KERAS3_LAYERS)
    names = list(KERAS3_LAYERS)
    for name in ("lstm_a", "gru_rb", "bigru", "bilstm"):
        i = names.index(name)
        inp = e["x"] if i == 0 else e[f"y_{names[i - 1]}"]
        _check_keras_chain(layers, dict(e, x=inp), [name], {name: KERAS3_LAYERS[name]})
    assert not layers["back_lstm"].reverse


@pytest.mark.parametrize("fname", ["keras2_model.h5", "keras2_weights.h5"])
def test_keras2_legacy_h5(fname):
    pytest.importorskip("h5py")
    e = expected("keras2_model")
    layers = fastrnn.load_all(fixture(fname))
    assert list(layers) == ["k2_lstm", "k2_gru", "k2_bilstm"]
    _check_keras_chain(layers, e, layers, {
        "k2_lstm": ("LSTM", False, False, "carry", None),
        "k2_gru": ("GRU", False, False, "carry", False),
        "k2_bilstm": ("LSTM", True, False, "zero", None)})


# ---- ONNX ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["onnx_torch_lstm_stacked_bi", "onnx_torch_gru"])
def test_onnx_from_torch_export(name):
    pytest.importorskip("onnx")
    e = expected(name)
    layers = fastrnn.load_all(fixture(f"{name}.onnx"))
    if "stacked" in name:
        assert isinstance(layers, dict) and len(layers) == 2  # one node per torch layer
    assert_allclose(run_chain(layers, e["x"]), e["y"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name,direction,reset_after", [
    ("onnx_lstm_reverse_lens", "reverse", None),
    ("onnx_lstm_bi_lens", "bidirectional", None),
    ("onnx_gru_lbr0_bi_lens", "bidirectional", False),
    ("onnx_gru_lbr1_lens", "forward", True),
    ("onnx_gru_lbr0_reverse", "reverse", False),
])
def test_onnx_handmade(name, direction, reset_after):
    pytest.importorskip("onnx")
    e = expected(name)
    layer = fastrnn.from_onnx(fixture(f"{name}.onnx"), node=name)
    assert layer.reverse == (direction == "reverse")
    assert layer.bidirectional == (direction == "bidirectional")
    if reset_after is not None:
        assert layer.reset_after == reset_after
    y, state = layer(e["x"], lengths=e.get("lengths"))
    assert_allclose(y, e["y"], atol=ATOL, rtol=0)
    h = state[0] if isinstance(state, tuple) else state
    assert_allclose(h, e["h"], atol=ATOL, rtol=0)


# ---- TF1 checkpoints -------------------------------------------------------------------------

TF1_LAYERS = {  # expected key -> (scope, cell, num_layers, bidirectional, reverse)
    "basic": ("basic/rnn", "LSTM", 1, False, False),
    "lstm": ("lstm/rnn", "LSTM", 1, False, False),
    "gru": ("gru/rnn", "GRU", 1, False, False),
    "multi": ("multi/rnn/multi_rnn_cell", "LSTM", 2, False, False),
    "bi": ("bi/bidirectional_rnn", "GRU", 1, True, False),
    "bimulti_fw": ("bimulti/bidirectional_rnn/fw", "LSTM", 2, False, False),
    "bimulti_bw": ("bimulti/bidirectional_rnn/bw", "LSTM", 2, False, True),
}


def test_tf1_checkpoint_all_cells():
    e = expected("tf1_cells")
    for suffix in ("", ".index", ".data-00000-of-00001"):
        assert fastrnn.io.detect_format(fixture("tf1_cells.ckpt" + suffix)) == "tf1"
    layers = fastrnn.load_all(fixture("tf1_cells.ckpt"))
    for key, (scope, cell, L, bi, rev) in TF1_LAYERS.items():
        layer = layers[scope]
        assert (type(layer).__name__, layer.num_layers, layer.bidirectional, layer.reverse) == \
            (cell, L, bi, rev), scope
        y, _ = layer(e["x"], lengths=e["lengths"])
        assert_allclose(y, e[f"y_{key}"], atol=ATOL, rtol=0, err_msg=scope)


def test_tf1_forget_bias():
    e = expected("tf1_cells")
    path = fixture("tf1_cells.ckpt.index")
    layer = fastrnn.from_tf_checkpoint(path, scope="fb05/rnn", forget_bias=0.5)
    assert_allclose(layer(e["x"], lengths=e["lengths"])[0], e["y_fb05"], atol=ATOL, rtol=0)
    wrong = fastrnn.from_tf_checkpoint(path, scope="fb05/rnn")  # default 1.0: must differ
    assert np.abs(wrong(e["x"], lengths=e["lengths"])[0] - e["y_fb05"]).max() > 1e-3


def test_tf1_cudnn_compatible_lstm_defaults_to_zero_forget_bias():
    e = expected("tf1_cells")
    layer = fastrnn.from_tf_checkpoint(fixture("tf1_cells.ckpt"), scope="cudnn/rnn")
    assert_allclose(layer(e["x"])[0], e["y_cudnn"], atol=ATOL, rtol=0)
