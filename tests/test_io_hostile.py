"""Hostile and broken inputs to the loaders: each must raise a clear exception (never execute
code from a file, crash or load something wrong), plus missing optional dependencies and the CLI.
"""
import glob
import os
import pickle
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from fastrnn.__main__ import main as cli
from fastrnn.io import tf1

from tf_checkpoint_writer import write_index

HERE = os.path.join(os.path.dirname(__file__), "fixtures")
FILES = sorted(f for ext in ("pt", "safetensors", "keras", "h5", "onnx")
               for f in glob.glob(os.path.join(HERE, f"*.{ext}")))


def _needs(path):
    ext = path.rsplit(".", 1)[1]
    need = {"pt": "torch", "keras": "h5py", "h5": "h5py", "onnx": "onnx"}.get(ext)
    if need:
        pytest.importorskip(need)


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
@pytest.mark.parametrize("keep", [0.6, 0.97])
def test_truncated_files(path, keep, tmp_path):
    _needs(path)
    data = Path(path).read_bytes()
    bad = tmp_path / "bad"
    bad.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ValueError):
        fastrnn.load(bad)


def test_empty_and_unknown_files(tmp_path):
    for content in (b"", b"hello world, not weights", bytes(range(256))):
        (tmp_path / "f").write_bytes(content)
        with pytest.raises(ValueError, match="unknown file format"):
            fastrnn.load(tmp_path / "f")


# ---- pickles must never run ------------------------------------------------------------------

class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


def test_pt_with_pickled_object_is_not_executed(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"weight_ih_l0": _Evil(str(marker))}))
    zipped = tmp_path / "zipped.pt"
    torch.save({"weight_ih_l0": _Evil(str(marker))}, zipped)
    assert not marker.exists()
    for path in (raw, zipped):
        with pytest.raises(ValueError, match="weights-only"):
            fastrnn.load(path)
        with pytest.raises(ValueError, match="weights-only"):
            fastrnn.from_torch(path)
    assert not marker.exists()


def test_npz_with_pickled_member_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    with open(path, "wb") as f:
        np.savez(f, __config__=np.array("{}"),
                 x=np.array([_Evil(str(marker))], dtype=object))
    with pytest.raises(ValueError):
        fastrnn.load(path)
    assert not marker.exists()


# ---- wrong shapes, wrong gate counts ---------------------------------------------------------

def _torch_sd(G=4, H=4, I=3):
    rng = np.random.default_rng(0)
    return {"weight_ih_l0": rng.normal(size=(G * H, I)).astype(np.float32),
            "weight_hh_l0": rng.normal(size=(G * H, H)).astype(np.float32),
            "bias_ih_l0": np.zeros(G * H, np.float32), "bias_hh_l0": np.zeros(G * H, np.float32)}


def test_torch_state_dict_errors():
    sd = _torch_sd()
    fastrnn.from_torch(sd)  # the unbroken one loads
    with pytest.raises(ValueError, match="4 gate blocks|an LSTM has 4 and a GRU 3"):
        fastrnn.from_torch(_torch_sd(G=5))
    with pytest.raises(ValueError, match="input weight has shape"):
        fastrnn.from_torch(dict(sd, weight_ih_l0=sd["weight_ih_l0"][:-1]))
    with pytest.raises(ValueError, match="bias"):
        fastrnn.from_torch(dict(sd, bias_hh_l0=np.zeros(15, np.float32)))
    missing = dict(sd)
    del missing["bias_hh_l0"]
    with pytest.raises(ValueError, match="missing tensor bias_hh_l0"):
        fastrnn.from_torch(missing)
    with pytest.raises(ValueError, match="no nn.LSTM"):
        fastrnn.from_torch({"foo": np.zeros(3)})
    layered = dict(sd, weight_ih_l1=sd["weight_ih_l0"], weight_hh_l1=sd["weight_hh_l0"],
                   bias_ih_l1=sd["bias_ih_l0"], bias_hh_l1=sd["bias_hh_l0"])
    with pytest.raises(ValueError, match="shape"):  # layer 1 must take H inputs, not 3
        fastrnn.from_torch(layered)


def test_safetensors_lying_sizes(tmp_path):
    from fastrnn.io.torch import read_safetensors, write_safetensors
    good = tmp_path / "g.safetensors"
    write_safetensors(_torch_sd(), good)
    data = good.read_bytes()
    n = int.from_bytes(data[:8], "little")
    with pytest.raises(ValueError, match="header claims"):
        read_safetensors((n + 10 ** 6).to_bytes(8, "little") + data[8:])
    header = data[8:8 + n].replace(b'"shape":[16,3]', b'"shape":[16,4]')
    assert header != data[8:8 + n]
    with pytest.raises(ValueError, match="needs"):
        read_safetensors(data[:8] + header + data[8 + n:])
    with pytest.raises(ValueError, match="JSON"):
        read_safetensors(data[:8] + b"{" * n + data[8 + n:])


def test_keras_config_errors():
    from fastrnn.io.keras import layer_from_config
    rng = np.random.default_rng(0)
    k, r, b = rng.normal(size=(3, 16)), rng.normal(size=(4, 16)), rng.normal(size=16)
    layer_from_config("LSTM", {}, [k, r, b])
    with pytest.raises(ValueError, match="kernel has shape"):
        layer_from_config("LSTM", {}, [k[:, :12], r, b])
    with pytest.raises(ValueError, match="recurrent_kernel has shape"):
        layer_from_config("GRU", {}, [k, r, b])          # 4 gates' worth for a GRU
    with pytest.raises(ValueError, match=r"reset_after=True\) bias"):
        layer_from_config("GRU", {}, [k[:, :12], r[:, :12], b[:12]])
    with pytest.raises(ValueError, match="expected 3 weight arrays"):
        layer_from_config("LSTM", {}, [k, r])
    with pytest.raises(ValueError, match="merge_mode='sum'"):
        layer_from_config("Bidirectional", {"layer": {"class_name": "LSTM", "config": {}},
                                            "merge_mode": "sum"}, [k, r, b] * 2)
    with pytest.raises(ValueError, match="activation='gelu'"):  # relu etc. load now
        layer_from_config("LSTM", {"activation": "gelu"}, [k, r, b])
    with pytest.raises(ValueError, match="SimpleRNN"):
        layer_from_config("SimpleRNN", {}, [k, r, b])


# ---- ONNX attributes --------------------------------------------------------------------------

def _onnx_model(attrs=None, W_shape=None, P=False):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    H, I = 4, 3
    rng = np.random.default_rng(0)
    W = rng.normal(size=W_shape or (1, 4 * H, I)).astype(np.float32)
    inits = [numpy_helper.from_array(W, "w"),
             numpy_helper.from_array(rng.normal(size=(1, 4 * H, H)).astype(np.float32), "r")]
    inputs = ["X", "w", "r"]
    if P:
        inits.append(numpy_helper.from_array(np.ones((1, 3 * H), np.float32), "p"))
        inputs += ["", "", "", "", "p"]
    node = helper.make_node("LSTM", inputs, ["Y"], name="n", hidden_size=H, **(attrs or {}))
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 2, I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    return onnx, helper.make_model(graph)


@pytest.mark.parametrize("attrs,match", [
    (dict(bogus=1), "unknown attribute 'bogus'"),
    (dict(layout=2), "'layout'=2 is invalid"),
    (dict(clip=-1.0), "'clip'=-1.0 must be positive"),
    (dict(activations=["Gelu", "Tanh", "Tanh"]), "'Gelu' is not an ONNX RNN activation"),
    (dict(activations=["Relu", "Tanh"]), "has 2 entries, expected 3"),
])
def test_onnx_invalid_attributes(attrs, match):
    """The variant attributes load now (tests/test_onnx_variants.py); invalid ones are refused
    with the node named."""
    _, model = _onnx_model(attrs)
    with pytest.raises(ValueError, match=match):
        fastrnn.from_onnx(model)


def test_onnx_shape_and_peephole_errors(tmp_path):
    onnx, model = _onnx_model()
    fastrnn.from_onnx(model)  # the unbroken one loads
    assert fastrnn.from_onnx(_onnx_model(P=True)[1]).peepholes  # peepholes load now
    with pytest.raises(ValueError, match="W has shape"):
        fastrnn.from_onnx(_onnx_model(W_shape=(1, 15, 3))[1])
    with pytest.raises(ValueError, match="hidden_size=4 but W implies 5"):
        fastrnn.from_onnx(_onnx_model(W_shape=(1, 20, 3))[1])


# ---- TF1 checkpoints ---------------------------------------------------------------------------

@pytest.fixture
def ckpt_copy(tmp_path):
    src = os.path.join(HERE, "tf1_cells.ckpt")
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(src + suffix, tmp_path / ("c.ckpt" + suffix))
    return str(tmp_path / "c.ckpt")


def test_tf1_index_writer_round_trip(ckpt_copy):
    """The test's SSTable writer itself reproduces a loadable checkpoint."""
    entries = tf1.read_index(Path(ckpt_copy + ".index").read_bytes())
    write_index(ckpt_copy + ".index", {k.encode(): v for k, v in entries.items()})
    assert len(fastrnn.load_all(ckpt_copy)) == 9


def test_tf1_missing_variable(ckpt_copy):
    entries = tf1.read_index(Path(ckpt_copy + ".index").read_bytes())
    del entries["gru/rnn/gru_cell/candidate/bias"]
    write_index(ckpt_copy + ".index", {k.encode(): v for k, v in entries.items()})
    with pytest.raises(ValueError, match="lacks variable 'gru/rnn/gru_cell/candidate/bias'"):
        fastrnn.from_tf_checkpoint(ckpt_copy)


def test_tf1_missing_stacked_cell(ckpt_copy):
    entries = tf1.read_index(Path(ckpt_copy + ".index").read_bytes())
    for k in list(entries):
        if "multi_rnn_cell/cell_0/" in k and k.startswith("multi/"):
            del entries[k]
    write_index(ckpt_copy + ".index", {k.encode(): v for k, v in entries.items()})
    with pytest.raises(ValueError, match="some are missing"):
        fastrnn.from_tf_checkpoint(ckpt_copy)


def test_tf1_lying_size_and_truncated_data(ckpt_copy):
    entries = tf1.read_index(Path(ckpt_copy + ".index").read_bytes())
    name = "basic/rnn/basic_lstm_cell/bias"
    v = entries[name]
    # BundleEntryProto field 5 (size) is encoded as tag 0x28 followed by a varint: 64 bytes here
    assert b"\x28\x40" in v
    entries[name] = v.replace(b"\x28\x40", b"\x28\x44", 1)
    write_index(ckpt_copy + ".index", {k.encode(): v for k, v in entries.items()})
    with pytest.raises(ValueError, match="records 68 bytes"):
        fastrnn.from_tf_checkpoint(ckpt_copy)
    shutil.copy(os.path.join(HERE, "tf1_cells.ckpt.index"), ckpt_copy + ".index")
    data_file = ckpt_copy + ".data-00000-of-00001"
    data = Path(data_file).read_bytes()
    Path(data_file).write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="beyond"):
        fastrnn.from_tf_checkpoint(ckpt_copy)
    os.remove(data_file)
    with pytest.raises(ValueError, match="data file .* is missing"):
        fastrnn.from_tf_checkpoint(ckpt_copy)


# ---- missing optional dependencies -----------------------------------------------------------

@pytest.mark.parametrize("module,extra,path", [
    ("h5py", "keras", "keras_model.h5"), ("onnx", "onnx", "onnx_torch_gru.onnx"),
    ("torch", "torch", "torch_lstm.pt")])
def test_missing_dependency_says_what_to_install(monkeypatch, module, extra, path):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=rf"pip install fastrnn\[{extra}\]"):
        fastrnn.load(os.path.join(HERE, path))


# ---- CLI -------------------------------------------------------------------------------------

def test_cli_inspect(capsys):
    pytest.importorskip("h5py")
    assert cli(["inspect", os.path.join(HERE, "keras_model.keras")]) == 0
    out = capsys.readouterr().out
    assert "keras" in out and "bigru: GRU input_size=4 hidden_size=4" in out
    assert "gates=(update, reset, candidate)" in out and "masked_output=carry" in out
    assert "bidirectional reset_after=True" in out
    pytest.importorskip("onnx")
    assert cli(["inspect", os.path.join(HERE, "onnx_lstm_bi_lens.onnx")]) == 0
    assert "file_gate_order=(input, output, forget, cell)" in capsys.readouterr().out


def test_cli_convert_between_formats(tmp_path, capsys):
    pytest.importorskip("onnx")
    src = os.path.join(HERE, "torch_gru_stacked_bi.safetensors")
    layer = fastrnn.load(src)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    for fmt, name in (("npz", "a.bin"), ("onnx", "b.onnx"), ("safetensors", "c.st")):
        out = tmp_path / name
        assert cli(["convert", src, "-o", str(out), "--format", fmt]) == 0
        back = fastrnn.load(out)
        chain = back.values() if isinstance(back, dict) else [back]
        z = x
        for part in chain:
            z = part(z)[0]
        np.testing.assert_allclose(z, layer(x)[0], atol=1e-6, rtol=0)
    assert cli(["convert", os.path.join(HERE, "tf1_cells.ckpt"), "-o",
                str(tmp_path / "x.npz")]) == 1  # several layers and no --name
    assert "choose one" in capsys.readouterr().err
    assert cli(["convert", os.path.join(HERE, "tf1_cells.ckpt"), "-o",
                str(tmp_path / "x.npz"), "--name", "gru/rnn"]) == 0
    assert fastrnn.load(tmp_path / "x.npz").reset_after is False


def test_keras_parse_time_limit_is_a_clear_error(monkeypatch):
    """The time limit on HDF5 parsing (a damaged file can make libhdf5 loop) ends in a
    ValueError that says what happened, not a hang."""
    pytest.importorskip("h5py")
    monkeypatch.setenv("FASTRNN_HDF5_TIMEOUT", "0.001")
    with pytest.raises(ValueError, match="did not finish within"):
        fastrnn.from_keras(os.path.join(HERE, "keras_model.h5"))


def test_cli_bad_file(tmp_path, capsys):
    (tmp_path / "junk").write_bytes(b"junk")
    assert cli(["inspect", str(tmp_path / "junk")]) == 1
    assert "unknown file format" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["tf1_cells.ckpt.index", "torch_lstm_stacked_bi.safetensors",
                                  "npz", "keras_model.keras", "keras_model.h5"])
def test_corrupted_bytes_raise_value_error_or_load(name, tmp_path, monkeypatch):
    """Random byte flips: a clean ValueError or a load, never another exception (a flip inside
    weight data legitimately still loads) and never a hang: Keras files are parsed in a child
    process with a time limit, because libhdf5 itself can loop forever on some damaged files."""
    if name.startswith("keras"):
        pytest.importorskip("h5py")
        monkeypatch.setenv("FASTRNN_HDF5_TIMEOUT", "20")
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if name == "npz":
        fastrnn.GRU(3, 4, num_layers=2).save(tmp_path / "src.npz")
        data, target = (tmp_path / "src.npz").read_bytes(), tmp_path / "f.npz"
    else:
        data, target = Path(HERE, name).read_bytes(), tmp_path / name.replace("tf1_cells", "c")
    if name.endswith(".index"):
        shutil.copy(os.path.join(HERE, "tf1_cells.ckpt.data-00000-of-00001"),
                    tmp_path / "c.ckpt.data-00000-of-00001")
    for _ in range(40):
        b = bytearray(data)
        for pos in rng.integers(len(b), size=rng.integers(1, 4)):
            b[pos] = rng.integers(256)
        target.write_bytes(bytes(b))
        try:
            fastrnn.load(target)
        except ValueError:
            pass
