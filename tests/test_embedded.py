"""Embedded deployment: the .frnn file, the C library built from src/ alone, streaming from C.

Cross-checks run C programs compiled here against the static library built by src/Makefile:
examples/c/stream.c (sample-by-sample fr_step) and tests/c/frnn_forward_driver.c (fr_forward
over whole sequences, stacked and bidirectional, with lengths and initial states).

Tolerances: none. The C library and the Python extension run the same kernels (fr_forward calls
fr_layer_forward layer by layer; fr_step's kernel performs the same operations in the same
order, see src/fastrnn/stream_impl.inc), so outputs are compared bitwise. The PyTorch-exported
example is additionally compared with torch itself within the float32 tolerance of
test_torch_parity.py (2e-5; rational float32 activations vs libm).
"""
import os
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest

import fastrnn
from fastrnn import _core
from fastrnn.io.frnn import MAGIC, load_frnn, save_frnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_CC = shutil.which("make") is not None and shutil.which("cc") is not None
needs_cc = pytest.mark.skipif(not HAVE_CC, reason="needs make and a C compiler")


def _run(cmd, timeout=300, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:])
    return proc


@pytest.fixture(scope="module")
def clib(tmp_path_factory):
    """src/ copied and built standalone; the example and the driver linked against it."""
    if not HAVE_CC:
        pytest.skip("needs make and a C compiler")
    tmp = tmp_path_factory.mktemp("clib")
    src = tmp / "src"
    shutil.copytree(os.path.join(ROOT, "src"), src, ignore=shutil.ignore_patterns("build"))
    proc = _run(["make", "-C", str(src), "-j2", "all", "build/frnn_fuzz", "build/test_stream"])
    assert proc.returncode == 0
    lib = src / "build" / "libfastrnn.a"
    assert lib.exists() and (src / "build" / "libfastrnn.so").exists()
    progs = {}
    for name, path in (("stream", "examples/c/stream.c"),
                       ("driver", "tests/c/frnn_forward_driver.c")):
        exe = tmp / name
        proc = _run(["cc", "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
                     f"-I{src / 'fastrnn'}", os.path.join(ROOT, path), str(lib), "-lm",
                     "-fopenmp", "-o", str(exe)])
        assert proc.returncode == 0, name
        progs[name] = str(exe)
    progs["fuzz"] = str(src / "build" / "frnn_fuzz")
    progs["test_stream"] = str(src / "build" / "test_stream")
    progs["src"] = str(src)  # test_stream writes build/test_stream.frnn relative to it
    progs["tmp"] = tmp
    return progs


def _layer(cell, dtype="float32", **kw):
    cls = fastrnn.LSTM if cell == "lstm" else fastrnn.GRU
    if cell.startswith("gru"):
        kw["reset_after"] = cell == "gru_after"
    I, H = kw.pop("I", 3), kw.pop("H", 5)
    layer = cls(I, H, dtype=dtype, seed=kw.pop("seed", 0), **kw)
    rng = np.random.default_rng(1)
    # Wider than the default init so that every nonlinearity is exercised.
    layer.load_state_dict({k: rng.uniform(-0.7, 0.7, v.shape)
                           for k, v in layer.state_dict().items()})
    return layer


CONFIGS = {
    "lstm": dict(cell="lstm"),
    "gru_after": dict(cell="gru_after"),
    "gru_before": dict(cell="gru_before"),
    "lstm_stacked_bidi": dict(cell="lstm", num_layers=3, bidirectional=True, H=17),
    "gru_after_bidi_carry": dict(cell="gru_after", bidirectional=True, masked_output="carry"),
    "gru_before_stacked": dict(cell="gru_before", num_layers=2, H=33, I=1),
    "lstm_reverse_nobias": dict(cell="lstm", reverse=True, use_bias=False, H=16),
    "gru_before_stacked_bidi": dict(cell="gru_before", num_layers=2, bidirectional=True),
}


# ---- Python reader / writer ----

@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "bf16"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip_exact(name, dtype, tmp_path):
    cfg = dict(CONFIGS[name])
    quantized = dtype in ("int8", "bf16")
    layer = _layer(cfg.pop("cell"), "float32" if quantized else dtype,
                   name="my layer é", dropout=0.25, **cfg)
    if quantized:
        layer = layer.quantize(dtype)
    path = tmp_path / "m.frnn"
    save_frnn(layer, path)
    data = path.read_bytes()
    assert data[:4] == MAGIC
    # a plain cell stays version 1 (older readers read it); quantized weights need version 3
    assert data[4:6] == (b"\x03\x00" if quantized else b"\x01\x00")
    assert data[19] == {"int8": 1, "bf16": 2}.get(dtype, 0)
    assert zlib.crc32(data[:-4]) == struct.unpack("<I", data[-4:])[0]
    for source in (path, str(path), data, bytearray(data), memoryview(data), open(path, "rb")):
        back = load_frnn(source)
        if hasattr(source, "close"):
            source.close()
        assert repr(back) == repr(layer) and type(back) is type(layer)
        assert (back.dropout, back.recurrent_dropout, back.masked_output) == \
            (layer.dropout, layer.recurrent_dropout, layer.masked_output)
        a, b = layer.state_dict(), back.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    x = np.random.default_rng(0).normal(size=(2, 4, layer.input_size))
    np.testing.assert_array_equal(layer(x)[0], back(x)[0])


def test_save_rejects_non_layers(tmp_path):
    with pytest.raises(TypeError, match="LSTM or GRU"):
        save_frnn(object(), tmp_path / "x.frnn")
    with pytest.raises(TypeError, match="path, bytes"):
        load_frnn(123)


def _encode_via_file(layer):
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.frnn")
        save_frnn(layer, p)
        with open(p, "rb") as f:
            return f.read()


def _fix_crc(b):
    b = bytearray(b)
    b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[:-4])))
    return bytes(b)


def _python_accepts(data):
    try:
        load_frnn(data)
        return True
    except ValueError:
        return False


def test_reader_errors_are_clear():
    data = _encode_via_file(_layer("lstm"))
    with pytest.raises(ValueError, match="magic"):
        load_frnn(b"NOPE" + data[4:])
    bumped = bytearray(data)
    bumped[4] = 4
    with pytest.raises(ValueError, match="version 4 is not supported"):
        load_frnn(_fix_crc(bumped))
    assert _core.frnn_validate(_fix_crc(bumped))[0] == -6  # FR_EVERSION
    # A version-1 image relabelled 2: its name and payload are read as a variant block.
    bumped[4] = 2
    with pytest.raises(ValueError, match="variant block"):
        load_frnn(_fix_crc(bumped))
    assert _core.frnn_validate(_fix_crc(bumped))[0] == -5  # FR_EFORMAT
    with pytest.raises(ValueError, match="truncated"):
        load_frnn(data[:-1])
    flipped = bytearray(data)
    flipped[80] ^= 0x20
    with pytest.raises(ValueError, match="CRC32"):
        load_frnn(bytes(flipped))
    lying = bytearray(data)
    lying[24] = 9  # hidden_size, with a recomputed CRC: the size check must catch it
    with pytest.raises(ValueError, match="payload size"):
        load_frnn(_fix_crc(lying))


def test_fuzz_python_and_c_readers_agree():
    """Truncations at every offset, flipped bytes, and every header byte rewritten (CRC fixed):
    the pure-Python reader and the C loader accept and reject exactly the same images, and
    never fail with anything but ValueError / an error status."""
    data = _encode_via_file(_layer("gru_before", num_layers=2, bidirectional=True, I=2, H=3))
    images = [data[:n] for n in range(len(data))]
    images += [bytes(b ^ (0xFF if i == j else 0) for j, b in enumerate(data))
               for i in range(0, len(data), 7)]
    for off in range(4, 64):
        for v in (0, 1, 2, 3, 7, 0x80, 0xFF):
            m = bytearray(data)
            m[off] = v
            images.append(_fix_crc(m))
    accepted = 0
    for img in images:
        py = _python_accepts(img)
        c = _core.frnn_validate(img)[0] == 0
        assert py == c, (len(img), img[:64].hex())
        accepted += py
    assert 0 < accepted < len(images) // 4  # some header edits are valid (e.g. masked_output)


# ---- the C library ----

def _write(path, a):
    np.ascontiguousarray(a).tofile(path)
    return str(path)


@needs_cc
@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "bf16"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_c_forward_matches_python_bitwise(clib, name, dtype, tmp_path):
    cfg = dict(CONFIGS[name])
    quantized = dtype in ("int8", "bf16")
    layer = _layer(cfg.pop("cell"), "float32" if quantized else dtype, **cfg)
    if quantized:  # weights int8 / bf16, activations and states float32
        layer, dtype = layer.quantize(dtype), "float32"
    model = tmp_path / "m.frnn"
    save_frnn(layer, model)
    rng = np.random.default_rng(3)
    B, T = 4, 7
    L, D, H = layer.num_layers, layer.num_directions, layer.hidden_size
    x = rng.normal(size=(B, T, layer.input_size)).astype(dtype)
    lengths = np.array([7, 0, 3, 5], np.int32)
    h0 = rng.normal(size=(L * D, B, H)).astype(dtype) * 0.5
    c0 = rng.normal(size=(L * D, B, H)).astype(dtype) * 0.5
    lstm = isinstance(layer, fastrnn.LSTM)
    out = tmp_path / "out"
    proc = _run([clib["driver"], str(model), str(B), str(T), _write(tmp_path / "x", x),
                 _write(tmp_path / "len", lengths), _write(tmp_path / "h0", h0),
                 _write(tmp_path / "c0", c0) if lstm else "-", str(out)])
    assert proc.returncode == 0
    y_ref, state = layer(x, lengths=lengths, initial_state=(h0, c0) if lstm else h0)
    y = np.fromfile(f"{out}.y", dtype).reshape(y_ref.shape)
    np.testing.assert_array_equal(y, y_ref)
    h_ref = state[0] if lstm else state
    np.testing.assert_array_equal(np.fromfile(f"{out}.h", dtype).reshape(h_ref.shape), h_ref)
    if lstm:
        np.testing.assert_array_equal(np.fromfile(f"{out}.c", dtype).reshape(h_ref.shape),
                                      state[1])


STREAM_CONFIGS = {
    "lstm": dict(cell="lstm", I=1, H=8),
    "gru_after": dict(cell="gru_after", I=4, H=17),
    "gru_before": dict(cell="gru_before", I=2, H=16),
    "lstm_stacked": dict(cell="lstm", num_layers=3, I=5, H=33),
    "gru_before_stacked": dict(cell="gru_before", num_layers=2, I=3, H=9),
}


@needs_cc
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(STREAM_CONFIGS))
def test_c_stream_example_matches_python_bitwise(clib, name, dtype, tmp_path):
    """examples/c/stream.c runs the model sample by sample (fr_step); Python runs the whole
    sequence at once (fr_layer_forward): bitwise equal."""
    cfg = dict(STREAM_CONFIGS[name])
    layer = _layer(cfg.pop("cell"), dtype, **cfg)
    model = tmp_path / "m.frnn"
    save_frnn(layer, model)
    T = 40
    x = np.random.default_rng(5).normal(size=(T, layer.input_size)).astype(dtype)
    proc = _run([clib["stream"], str(model), _write(tmp_path / "x", x), str(tmp_path / "y")])
    assert proc.returncode == 0
    assert "median step latency" in proc.stdout
    y = np.fromfile(tmp_path / "y", dtype).reshape(T, layer.hidden_size)
    np.testing.assert_array_equal(y, layer(x[None])[0][0])


@needs_cc
def test_c_stream_example_with_a_projection_writes_proj_size_units(clib, tmp_path):
    """With proj_size the last layer's h (what fr_step writes) has proj_size units, not
    hidden_size: the example sizes its output buffer and file from the last layer."""
    layer = fastrnn.LSTM(3, 24, proj_size=7, num_layers=2, seed=4)
    model = tmp_path / "p.frnn"
    save_frnn(layer, model)
    T = 30
    x = np.random.default_rng(6).normal(size=(T, 3)).astype("float32")
    proc = _run([clib["stream"], str(model), _write(tmp_path / "x", x), str(tmp_path / "y")])
    assert proc.returncode == 0, proc.stderr
    y = np.fromfile(tmp_path / "y", "float32")
    assert y.size == T * 7
    np.testing.assert_array_equal(y.reshape(T, 7), layer(x[None])[0][0])


@needs_cc
@pytest.mark.parametrize("scheme", ["int8", "bf16"])
@pytest.mark.parametrize("name", sorted(STREAM_CONFIGS))
def test_c_runtime_runs_quantized_files_bitwise(clib, name, scheme, tmp_path):
    """A quantized layer written as .frnn (version 3): fr_step (examples/c/stream.c, sample by
    sample) and fr_forward (the driver, lengths and initial states) give Python's bits."""
    cfg = dict(STREAM_CONFIGS[name])
    layer = _layer(cfg.pop("cell"), "float32", **cfg).quantize(scheme)
    model = tmp_path / "q.frnn"
    save_frnn(layer, model)
    assert model.read_bytes()[4] == 3  # the int8 version
    T = 40
    x = np.random.default_rng(5).normal(size=(T, layer.input_size)).astype("float32")
    proc = _run([clib["stream"], str(model), _write(tmp_path / "x", x), str(tmp_path / "y")])
    assert proc.returncode == 0, proc.stderr
    y = np.fromfile(tmp_path / "y", "float32").reshape(T, layer.hidden_size)
    np.testing.assert_array_equal(y, layer(x[None])[0][0])
    rng = np.random.default_rng(3)
    B, T = 4, 7
    L, H = layer.num_layers, layer.hidden_size
    x = rng.normal(size=(B, T, layer.input_size)).astype("float32")
    lengths = np.array([7, 0, 3, 5], np.int32)
    h0 = (rng.normal(size=(L, B, H)) * 0.5).astype("float32")
    c0 = (rng.normal(size=(L, B, H)) * 0.5).astype("float32")
    lstm = isinstance(layer, fastrnn.LSTM)
    out = tmp_path / "out"
    proc = _run([clib["driver"], str(model), str(B), str(T), _write(tmp_path / "x", x),
                 _write(tmp_path / "len", lengths), _write(tmp_path / "h0", h0),
                 _write(tmp_path / "c0", c0) if lstm else "-", str(out)])
    assert proc.returncode == 0, proc.stderr
    y_ref, state = layer(x, lengths=lengths, initial_state=(h0, c0) if lstm else h0)
    np.testing.assert_array_equal(np.fromfile(f"{out}.y", "float32").reshape(y_ref.shape), y_ref)
    h_ref = state[0] if lstm else state
    np.testing.assert_array_equal(np.fromfile(f"{out}.h", "float32").reshape(h_ref.shape), h_ref)


@needs_cc
def test_c_int8_file_is_smaller_and_corruption_is_refused(clib, tmp_path):
    layer = _layer("lstm", "float32", I=64, H=128, num_layers=2)
    save_frnn(layer, tmp_path / "f.frnn")
    save_frnn(layer.quantize(), tmp_path / "q.frnn")
    f, q = (tmp_path / "f.frnn").stat().st_size, (tmp_path / "q.frnn").stat().st_size
    assert q < 0.3 * f
    data = bytearray((tmp_path / "q.frnn").read_bytes())
    data[19] = 0  # a version-3 file must say its weights are int8 (1) or bf16 (2)
    assert _core.frnn_validate(_fix_crc(bytes(data)))[0] != 0
    with pytest.raises(ValueError, match="weights"):
        fastrnn.load(_fix_crc(bytes(data)))


@needs_cc
def test_c_stream_refuses_bidirectional(clib, tmp_path):
    layer = _layer("lstm", bidirectional=True)
    save_frnn(layer, tmp_path / "m.frnn")
    proc = subprocess.run([clib["stream"], str(tmp_path / "m.frnn")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "unidirectional" in proc.stderr
    with pytest.raises(ValueError, match="unidirectional"):
        _core.StreamModel(layer._engines, 1)


@needs_cc
def test_example_with_torch_model(clib, tmp_path):
    """A PyTorch nn.LSTM -> fastrnn layer -> .frnn -> examples/c/stream.c, sample by sample:
    matches torch within the float32 tolerance and the fastrnn forward bitwise."""
    torch = pytest.importorskip("torch")
    from test_torch_parity import torch_to_fastrnn_state_dict

    torch.manual_seed(0)
    mod = torch.nn.LSTM(2, 24, num_layers=2, batch_first=True).eval()
    layer = fastrnn.LSTM(2, 24, num_layers=2)
    layer.load_state_dict(torch_to_fastrnn_state_dict(mod, "lstm", np.float32))
    save_frnn(layer, tmp_path / "torch_lstm.frnn")
    t = np.arange(300)
    x = np.stack([np.sin(0.05 * t), np.cos(0.031 * t)], axis=1).astype(np.float32)
    proc = _run([clib["stream"], str(tmp_path / "torch_lstm.frnn"), _write(tmp_path / "x", x),
                 str(tmp_path / "y")])
    assert proc.returncode == 0
    y = np.fromfile(tmp_path / "y", np.float32).reshape(300, 24)
    with torch.no_grad():
        y_torch = mod(torch.from_numpy(x[None]))[0][0].numpy()
    np.testing.assert_allclose(y, y_torch, atol=1e-4, rtol=0)  # T=300: see the parity tests
    np.testing.assert_array_equal(y, layer(x[None])[0][0])
    # Synthetic signal mode prints the latency.
    proc = _run([clib["stream"], str(tmp_path / "torch_lstm.frnn")])
    assert proc.returncode == 0 and "median step latency" in proc.stdout


@needs_cc
def test_c_fuzz_on_python_written_file(clib, tmp_path):
    layer = _layer("lstm", num_layers=2, bidirectional=True, I=2, H=3, dtype="float64")
    save_frnn(layer, tmp_path / "m.frnn")
    proc = _run([clib["fuzz"], str(tmp_path / "m.frnn")])
    assert proc.returncode == 0 and ", 0 failed" in proc.stdout


@needs_cc
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
def test_valgrind_clean(clib, tmp_path):
    """memcheck: no invalid access, no definite leak, in the fuzzer (every truncated and
    corrupted image is an exact-size heap copy; Python-written float and int8 files and its own
    version-1 and version-2 images), the C streaming tests, the example and the sequence
    driver, on float and int8 models."""
    layer = _layer("gru_after", num_layers=2, I=2, H=5)
    save_frnn(layer, tmp_path / "m.frnn")
    save_frnn(_layer("lstm", num_layers=2, I=2, H=5).quantize(), tmp_path / "q.frnn")  # int8
    save_frnn(_layer("gru_before", I=2, H=5).quantize("bf16"), tmp_path / "b.frnn")
    vg = ["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
          "--errors-for-leak-kinds=definite"]
    x = np.ones((3, 2, 2), np.float32)
    runs = [
        [clib["fuzz"], str(tmp_path / "m.frnn")],
        [clib["fuzz"]],  # its own images: version 1 and version 2 (variants, projection)
        [clib["test_stream"], "quick"],
        [clib["stream"], str(tmp_path / "m.frnn"), _write(tmp_path / "x", x[0]),
         str(tmp_path / "y")],
        [clib["driver"], str(tmp_path / "m.frnn"), "3", "2", _write(tmp_path / "xs", x),
         _write(tmp_path / "len", np.array([2, 1, 0], np.int32)), "-", "-",
         str(tmp_path / "o")],
        [clib["fuzz"], str(tmp_path / "q.frnn")],
        [clib["fuzz"], str(tmp_path / "b.frnn")],
        [clib["stream"], str(tmp_path / "b.frnn"), _write(tmp_path / "x", x[0]),
         str(tmp_path / "y")],
        [clib["stream"], str(tmp_path / "q.frnn"), _write(tmp_path / "x", x[0]),
         str(tmp_path / "y")],
        [clib["driver"], str(tmp_path / "q.frnn"), "3", "2", _write(tmp_path / "xs", x),
         _write(tmp_path / "len", np.array([2, 1, 0], np.int32)), "-", "-",
         str(tmp_path / "o")],
    ]
    for cmd in runs:
        proc = _run(vg + cmd, timeout=600, cwd=clib["src"])
        assert proc.returncode == 0, cmd[0]


# ---- layer.step() on the C streaming path, and the latency hook ----

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", ["lstm", "gru_after", "gru_before"])
@pytest.mark.parametrize("num_layers,B", [(1, 1), (3, 2)])
def test_step_bitwise_equals_forward(cell, dtype, num_layers, B, isa):
    layer = _layer(cell, dtype, num_layers=num_layers, I=4, H=19)
    rng = np.random.default_rng(7)
    T = 9
    x = rng.normal(size=(B, T, 4)).astype(dtype)
    L, H = num_layers, 19
    h0 = (0.5 * rng.normal(size=(L, B, H))).astype(dtype)
    c0 = (0.5 * rng.normal(size=(L, B, H))).astype(dtype)
    s0 = (h0, c0) if cell == "lstm" else h0
    y_ref, s_ref = layer(x, initial_state=s0)
    for fast in (True, False):
        state, ys = s0, []
        for t in range(T):
            # exact contiguous arrays take the fast path; a strided float64 view of a float32
            # layer's input (or vice versa) takes the validating path
            xt = np.ascontiguousarray(x[:, t]) if fast else \
                x[:, t].astype(np.float64 if dtype == "float32" else np.float32)[:, ::1]
            y, state = layer.step(xt, state)
            ys.append(y)
        if fast:
            np.testing.assert_array_equal(np.stack(ys, axis=1), y_ref)
        else:  # the input was rounded through the other dtype: close, not bitwise
            np.testing.assert_allclose(np.stack(ys, axis=1), y_ref, atol=1e-5, rtol=0)
        if cell == "lstm" and fast:
            np.testing.assert_array_equal(state[0], s_ref[0])
            np.testing.assert_array_equal(state[1], s_ref[1])
        elif fast:
            np.testing.assert_array_equal(state, s_ref)


def test_step_semantics_on_the_fast_path():
    gru = _layer("gru_after", I=3, H=5)
    x = np.ones((2, 3), np.float32)
    y0, h = gru.step(x)                      # no state: zeros
    y1, _ = gru.step(x, None)
    np.testing.assert_array_equal(y0, y1)
    ya, _ = gru.step(x, h)                   # h and (h,) are the same state
    yb, _ = gru.step(x, (h,))
    np.testing.assert_array_equal(ya, yb)
    h_before = h.copy()
    _, h2 = gru.step(x, h)
    np.testing.assert_array_equal(h, h_before)  # inputs are never written
    assert h2 is not h and not np.shares_memory(h2, h)
    with pytest.raises(ValueError, match="features"):
        gru.step(np.ones((2, 4), np.float32), h)
    with pytest.raises(ValueError, match="shape"):
        gru.step(x, np.zeros((1, 3, 5), np.float32))
    # Weight edits through gate() views are seen by the next step (no stale copy).
    gru.gate("candidate").kernel[...] += 1.0
    yc, _ = gru.step(x, h)
    np.testing.assert_array_equal(yc, gru(x[:, None], initial_state=h)[0][:, 0])
    assert not np.array_equal(yc, ya)
    with pytest.raises(ValueError, match="unidirectional"):
        _layer("lstm", bidirectional=True).step(x)
    deep = fastrnn.GRU(3, 4, num_layers=70, seed=0)  # no fixed limit on the number of layers
    np.testing.assert_array_equal(deep.step(x)[0], deep(x[:, None])[0][:, 0])


def test_step_threads_do_not_share_state():
    import threading

    layer = _layer("lstm", I=3, H=40)
    x = np.random.default_rng(0).normal(size=(1, 50, 3)).astype(np.float32)
    ref = layer(x)[0][0]
    results, errors = {}, []

    def run(k):
        try:
            state, ys = None, []
            for t in range(50):
                y, state = layer.step(np.ascontiguousarray(x[:, t]), state)
                ys.append(y[0])
            results[k] = np.stack(ys)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for k in range(4):
        np.testing.assert_array_equal(results[k], ref)


def test_c_step_latency_hook():
    from fastrnn.bench.c_latency import c_step_latency, weight_bytes

    layer = fastrnn.LSTM(1, 16, seed=0)
    r = c_step_latency(layer, steps=200, repeats=5)
    assert r["repeats"] == 5 and len(r["ns"]) == 5 and r["steps"] == 200
    assert 0 < r["min_ns"] <= r["median_ns"] <= r["max_ns"] < 1e6
    assert r["weight_bytes"] == weight_bytes(layer) == 4 * 16 * (1 + 16 + 1) * 4
    assert r["fraction_of_bound"] == pytest.approx(r["bound_ns"] / r["median_ns"])
    assert c_step_latency(fastrnn.GRU(4, 8, dtype="float64", reset_after=False),
                          repeats=3)["median_ns"] > 0
    with pytest.raises(ValueError, match="unidirectional"):
        c_step_latency(fastrnn.GRU(2, 3, bidirectional=True))
    with pytest.raises(ValueError, match="steps"):
        c_step_latency(layer, steps=0)
