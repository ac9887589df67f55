""".frnn version 2: every cell variant (docs/variants.md) through the flat file, read by the pure
Python reader and by the C library.

- save(format="frnn") -> fastrnn.load: the same layer (repr, activations, variant keywords,
  state_dict) and the same outputs, bitwise;
- the C loader (fastrnn._core.frnn_validate) accepts every file the Python reader accepts and
  rejects the same malformed ones; a C program linked against the standalone library runs the
  file with fr_forward (whole sequences) and fr_step (sample by sample) and matches the Python
  layer bitwise;
- the loaded layer's step() (the C streaming path, fr_step) equals its forward call, bitwise;
- malformed version-2 files give a ValueError naming what is wrong.
Projection (proj_size) files included: the C library runs them with fr_forward and fr_step
too (proj_impl.inc, stream_impl.inc).
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
from fastrnn.io import frnn
from fastrnn.io.frnn import load_frnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_CC = shutil.which("make") is not None and shutil.which("cc") is not None

VARIANTS = {
    "lstm_peepholes": lambda **kw: fastrnn.LSTM(3, 5, peepholes=True, **kw),
    "lstm_clip": lambda **kw: fastrnn.LSTM(3, 5, clip=0.8, **kw),
    "lstm_cell_clip": lambda **kw: fastrnn.LSTM(3, 5, cell_clip=0.4, **kw),
    "lstm_input_forget": lambda **kw: fastrnn.LSTM(3, 5, input_forget=True, **kw),
    "lstm_keras_activations": lambda **kw: fastrnn.LSTM(
        3, 5, activation="relu", recurrent_activation="hard_sigmoid", **kw),
    "lstm_keras2_hard_sigmoid": lambda **kw: fastrnn.LSTM(
        3, 5, recurrent_activation="hard_sigmoid", hard_sigmoid="keras2", **kw),
    "lstm_alpha_beta": lambda **kw: fastrnn.LSTM(
        3, 5, activations=[("HardSigmoid", 0.3, 0.45), ("ScaledTanh", 1.3, 0.7),
                           ("Affine", 0.9, 0.1)], **kw),
    "lstm_per_direction": lambda **kw: fastrnn.LSTM(
        3, 5, bidirectional=True,
        activations=[("elu", 0.5), ("leaky_relu", 0.05), "softsign",
                     "sigmoid", ("thresholded_relu", 0.2), "linear"], **kw),
    "lstm_everything_stacked_bidi": lambda **kw: fastrnn.LSTM(
        3, 17, num_layers=3, bidirectional=True, masked_output="carry", peepholes=True,
        clip=2.0, cell_clip=1.5, input_forget=True,
        activations=[("hard_sigmoid", 0.2, 0.5), "softsign", "tanh"], **kw),
    "lstm_reverse_nobias": lambda **kw: fastrnn.LSTM(
        3, 6, reverse=True, use_bias=False, peepholes=True, clip=1.0, **kw),
    "lstm_stacked_uni": lambda **kw: fastrnn.LSTM(
        4, 19, num_layers=3, peepholes=True, cell_clip=0.9,
        activations=["sigmoid", "softplus", ("affine", 0.8, -0.1)], **kw),
    "gru_clip": lambda **kw: fastrnn.GRU(3, 5, clip=0.6, **kw),
    "gru_before_activations_stacked": lambda **kw: fastrnn.GRU(
        3, 16, num_layers=2, reset_after=False, clip=1.2,
        activations=[("hard_sigmoid", 0.25, 0.4), "relu"], **kw),
    "gru_per_direction_bidi": lambda **kw: fastrnn.GRU(
        3, 9, bidirectional=True, num_layers=2,
        activations=[("LeakyRelu", 0.2), "Softsign", "HardSigmoid", "linear"], **kw),
    "lstm_projection": lambda **kw: fastrnn.LSTM(3, 6, proj_size=4, **kw),
    "lstm_projection_all_stacked_bidi": lambda **kw: fastrnn.LSTM(
        3, 7, proj_size=3, proj_clip=0.5, num_layers=2, bidirectional=True, peepholes=True,
        cell_clip=1.0, clip=2.0, **kw),
    "lstm_projection_stacked_uni": lambda **kw: fastrnn.LSTM(
        4, 9, proj_size=5, proj_clip=0.7, num_layers=2, **kw),
}
STREAMABLE = sorted(k for k, make in VARIANTS.items()
                    if make(seed=0).num_directions == 1 and not make(seed=0).reverse)


def _layer(key, dtype="float32", **kw):
    layer = VARIANTS[key](dtype=dtype, seed=0, **kw)
    rng = np.random.default_rng(1)
    # Wider than the default init (peepholes start at 0) so that every path is exercised.
    layer.load_state_dict({k: rng.uniform(-0.7, 0.7, v.shape)
                           for k, v in layer.state_dict().items()})
    return layer


def _units(layer):
    return getattr(layer, "proj_size", 0) or layer.hidden_size


def _inputs(layer, B=4, T=7, seed=3):
    rng = np.random.default_rng(seed)
    L, D, H, R = layer.num_layers, layer.num_directions, layer.hidden_size, _units(layer)
    x = (1.5 * rng.normal(size=(B, T, layer.input_size))).astype(layer.dtype)
    h0 = (0.5 * rng.normal(size=(L * D, B, R))).astype(layer.dtype)
    c0 = (0.8 * rng.normal(size=(L * D, B, H))).astype(layer.dtype)
    lengths = np.array([T, 0, 3, 5][:B], np.int32)
    return x, h0, c0, lengths


def _state(layer, h0, c0):
    return (h0, c0) if isinstance(layer, fastrnn.LSTM) else h0


def _fix_crc(b):
    b = bytearray(b)
    b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[:-4])))
    return bytes(b)


def _saved(layer, tmp_path, name="m.frnn"):
    path = tmp_path / name
    layer.save(path, format="frnn")
    return path


# ---- the Python reader and writer ----

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_round_trip_bitwise(key, dtype, tmp_path):
    layer = _layer(key, dtype, name="variant é", dropout=0.125)
    path = _saved(layer, tmp_path)
    data = path.read_bytes()
    assert data[:4] == b"FRNN" and struct.unpack_from("<H", data, 4)[0] == 2
    assert zlib.crc32(data[:-4]) == struct.unpack("<I", data[-4:])[0]
    assert len(data) == 64 + 144 + len("variant é".encode()) + \
        struct.unpack_from("<Q", data, 40)[0] + 4
    back = fastrnn.load(path)
    assert type(back) is type(layer) and repr(back) == repr(layer)
    assert back.activations == layer.activations
    assert back.variant_config() == layer.variant_config()
    assert back.variant_features == layer.variant_features
    assert (back.dropout, back.name, back.dtype) == (layer.dropout, layer.name, layer.dtype)
    a, b = layer.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    x, h0, c0, lengths = _inputs(layer)
    for kw in ({}, dict(lengths=lengths, initial_state=_state(layer, h0, c0))):
        ya, sa = layer(x, **kw)
        yb, sb = back(x, **kw)
        np.testing.assert_array_equal(ya, yb)
        for u, v in zip(sa if isinstance(sa, tuple) else (sa,),
                        sb if isinstance(sb, tuple) else (sb,)):
            np.testing.assert_array_equal(u, v)
    # The same bytes again (the writer is deterministic), and the C loader accepts them.
    assert frnn._encode(back) == data
    assert _core.frnn_validate(data) == (0, "")


@pytest.mark.parametrize("layer", [
    fastrnn.LSTM(2, 3, seed=0),
    fastrnn.GRU(2, 3, reset_after=False, bidirectional=True, seed=0),
    fastrnn.LSTM(2, 3, activations=["Sigmoid", "Tanh", "Tanh"], seed=0),
    fastrnn.GRU(2, 3, activation="tanh", recurrent_activation="sigmoid", clip=None, seed=0),
    fastrnn.LSTM(2, 3, peepholes=False, cell_clip=None, input_forget=False, proj_size=0, seed=0),
], ids=["lstm", "gru", "lstm_explicit_plain", "gru_explicit_plain", "lstm_keywords_off"])
def test_plain_cells_stay_version_1(layer, tmp_path):
    data = _saved(layer, tmp_path).read_bytes()
    assert struct.unpack_from("<H", data, 4)[0] == 1
    assert len(data) == 64 + struct.unpack_from("<Q", data, 40)[0] + 4
    assert repr(load_frnn(data)) == repr(layer)


def test_activation_codes_are_the_c_core_kinds():
    for name, code in frnn.ACTIVATION_CODES.items():
        if name == "linear":
            assert code == 12 and name not in _core.ACTIVATION_CODES  # affine(1, 0) in C
        else:
            assert _core.ACTIVATION_CODES[name] == code, name
    assert set(frnn.ACTIVATION_CODES) == set(fastrnn._variants.activation_names())


def test_variant_block_bytes():
    """The documented offsets hold what the layer says (docs/frnn-format.md)."""
    layer = fastrnn.LSTM(3, 5, bidirectional=True, peepholes=True, clip=1.5, cell_clip=0.25,
                         input_forget=True, activations=[("hard_sigmoid", 0.2, 0.5), "elu",
                                                         "linear", "sigmoid", "tanh", "relu"])
    data = frnn._encode(layer)
    assert struct.unpack_from("<I", data, 64)[0] == 144
    assert data[68:70] == b"\x01\x01" and struct.unpack_from("<I", data, 72)[0] == 0
    assert struct.unpack_from("<3d", data, 80) == (1.5, 0.25, 0.0)
    assert list(data[104:110]) == [4, 7, 12, 1, 2, 3]
    params = struct.unpack_from("<12d", data, 112)
    assert params[:4] == (0.2, 0.5, 1.0, 0.0)  # hard_sigmoid alpha, beta; elu alpha (beta 0)
    assert params[4:] == (0.0,) * 8
    gru = frnn._encode(fastrnn.GRU(3, 5, clip=0.5))
    assert list(gru[104:110]) == [1, 2, 0, 0, 0, 0]  # slot h and direction 1 unused: zero


def test_peephole_and_projection_payload_order():
    """Per (layer, direction): the gate arrays, then peepholes (input, forget, output), then
    the projection (H, P); recurrent weights have P rows."""
    layer = _layer("lstm_projection_all_stacked_bidi", "float64")
    data = frnn._encode(layer)
    sd = layer.state_dict()
    name_len = struct.unpack_from("<I", data, 32)[0]
    payload = np.frombuffer(data, "<f8", offset=64 + 144 + name_len,
                            count=struct.unpack_from("<Q", data, 40)[0] // 8)
    pos = 0
    for k in range(2):
        for d in ("forward", "backward"):
            for gate in ("input", "forget", "cell", "output"):
                for part, shape in (("kernel", (3 if k == 0 else 2 * 3, 7)),
                                    ("recurrent", (3, 7)), ("bias", (7,))):
                    a = sd[f"layer{k}.{d}.{gate}.{part}"]
                    assert a.shape == shape
                    np.testing.assert_array_equal(payload[pos:pos + a.size], a.ravel())
                    pos += a.size
            for gate in ("input", "forget", "output"):
                np.testing.assert_array_equal(payload[pos:pos + 7],
                                              sd[f"layer{k}.{d}.{gate}.peephole"])
                pos += 7
            p = sd[f"layer{k}.{d}.projection"]
            assert p.shape == (7, 3)
            np.testing.assert_array_equal(payload[pos:pos + 21], p.ravel())
            pos += 21
    assert pos == payload.size


# ---- the C library on the same files ----

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("key", STREAMABLE)
def test_step_of_loaded_layer_bitwise(key, dtype, tmp_path):
    """The loaded layer's step() (fr_step through the C streaming API; a one-step sequence call
    with a projection) equals its forward call and the original layer's, bitwise."""
    layer = _layer(key, dtype)
    back = fastrnn.load(_saved(layer, tmp_path))
    x, h0, c0, _ = _inputs(layer, B=3, T=6)
    s0 = _state(layer, h0, c0)
    y_ref, s_ref = layer(x, initial_state=s0)
    state, ys = s0, []
    for t in range(x.shape[1]):
        y, state = back.step(np.ascontiguousarray(x[:, t]), state)
        ys.append(y)
    np.testing.assert_array_equal(np.stack(ys, axis=1), y_ref)
    for u, v in zip(state if isinstance(state, tuple) else (state,),
                    s_ref if isinstance(s_ref, tuple) else (s_ref,)):
        np.testing.assert_array_equal(u, v)


# A C program over the standalone library: loads a .frnn file, then fr_forward over whole
# sequences (with lengths and initial states) or fr_step sample by sample; outputs R units wide
# (R = proj_size with a projection, else hidden_size).
_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fastrnn.h"

static void *slurp(const char *path, size_t want)
{
    if (strcmp(path, "-") == 0) return NULL;
    FILE *f = fopen(path, "rb");
    void *p = malloc(want ? want : 1);
    if (!f || fread(p, 1, want, f) != want) { fprintf(stderr, "cannot read %s\n", path); exit(2); }
    fclose(f);
    return p;
}

static void dump(const char *prefix, const char *ext, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s.%s", prefix, ext);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) { fprintf(stderr, "cannot write %s\n", path); exit(2); }
    fclose(f);
}

/* MODEL seq|step B T X LENGTHS|- H0 C0 OUT */
int main(int argc, char **argv)
{
    if (argc != 10) return 2;
    char err[256];
    fr_model *m = NULL;
    int rc = fr_model_load_file(argv[1], &m, err, sizeof err);
    if (rc != FR_OK) { fprintf(stderr, "load: %s\n", err); return 1; }
    const fr_layer_desc *d = fr_model_layer(m, 0);
    const int step = strcmp(argv[2], "step") == 0, B = atoi(argv[3]), T = atoi(argv[4]);
    const size_t L = (size_t)fr_model_num_layers(m), D = (size_t)d->num_directions;
    const size_t e = d->dtype == FR_FLOAT32 ? 4 : 8, H = (size_t)d->hidden_size;
    const size_t R = d->proj_size > 0 ? (size_t)d->proj_size : H, I = (size_t)d->input_size;
    const size_t ny = (size_t)B * T * D * R * e, nh = L * D * B * R * e, nc = L * D * B * H * e;
    char *x = slurp(argv[5], (size_t)B * T * I * e);
    int *lengths = slurp(argv[6], sizeof(int) * B);
    void *h0 = slurp(argv[7], nh), *c0 = slurp(argv[8], nc);
    char *y = malloc(ny), *hn = malloc(nh), *cn = malloc(nc);
    if (!step) {
        fr_sequence s = {B, T, x, lengths, NULL, h0, c0, y, hn, cn};
        rc = fr_forward(m, &s, NULL, 0, 1);
        if (rc != FR_OK) { fprintf(stderr, "fr_forward: %s\n", fr_strerror(rc)); return 3; }
    } else {
        fr_state *st = NULL;
        rc = fr_state_create(m, B, &st);
        if (rc != FR_OK) { fprintf(stderr, "fr_state_create: %s\n", fr_strerror(rc)); return 3; }
        fr_state_set(st, h0, c0);
        char *xt = malloc((size_t)B * I * e), *yt = malloc((size_t)B * R * e);
        for (int t = 0; t < T; t++) {
            for (int b = 0; b < B; b++)
                memcpy(xt + b * I * e, x + ((size_t)b * T + t) * I * e, I * e);
            rc = fr_step(m, st, xt, yt);
            if (rc != FR_OK) { fprintf(stderr, "fr_step: %s\n", fr_strerror(rc)); return 3; }
            for (int b = 0; b < B; b++)
                memcpy(y + ((size_t)b * T + t) * R * e, yt + b * R * e, R * e);
        }
        fr_state_get(st, hn, cn);
        fr_state_free(st);
        free(xt); free(yt);
    }
    dump(argv[9], "y", y, ny);
    dump(argv[9], "h", hn, nh);
    if (d->cell == FR_LSTM) dump(argv[9], "c", cn, nc);
    free(x); free(lengths); free(h0); free(c0); free(y); free(hn); free(cn);
    fr_model_free(m);
    return 0;
}
"""


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """src/ copied and built standalone; the driver above linked against it."""
    if not HAVE_CC:
        pytest.skip("needs make and a C compiler")
    tmp = tmp_path_factory.mktemp("frnn_variants")
    src = tmp / "src"
    shutil.copytree(os.path.join(ROOT, "src"), src, ignore=shutil.ignore_patterns("build"))
    proc = subprocess.run(["make", "-C", str(src), "-j8", "build/libfastrnn.a",
                           "build/frnn_fuzz"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (tmp / "driver.c").write_text(_DRIVER)
    exe = tmp / "driver"
    proc = subprocess.run(["cc", "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
                           f"-I{src / 'fastrnn'}", str(tmp / "driver.c"),
                           str(src / "build" / "libfastrnn.a"), "-lm", "-fopenmp",
                           "-o", str(exe)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(exe)


def _write(path, a):
    np.ascontiguousarray(a).tofile(path)
    return str(path)


def _c_case(key, mode):
    return pytest.param(key, mode, id=f"{key}-{mode}")


_C_CASES = [_c_case(k, "seq") for k in sorted(VARIANTS)] + [
    _c_case(k, "step") for k in STREAMABLE]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("key,mode", _C_CASES)
def test_c_library_runs_the_file_bitwise(driver, key, mode, dtype, tmp_path):
    """fr_model_load_file + fr_forward (lengths, initial states) or fr_step, in a program
    without Python, on the file Python wrote: the Python layer's outputs, bitwise."""
    layer = _layer(key, dtype)
    model = _saved(layer, tmp_path)
    B, T = 4, 7
    x, h0, c0, lengths = _inputs(layer, B, T)
    lstm = isinstance(layer, fastrnn.LSTM)
    out = tmp_path / "out"
    proc = subprocess.run(
        [driver, str(model), mode, str(B), str(T), _write(tmp_path / "x", x),
         _write(tmp_path / "len", lengths) if mode == "seq" else "-",
         _write(tmp_path / "h0", h0), _write(tmp_path / "c0", c0), str(out)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    kw = dict(lengths=lengths) if mode == "seq" else {}
    y_ref, state = layer(x, initial_state=_state(layer, h0, c0) if lstm else h0, **kw)
    np.testing.assert_array_equal(np.fromfile(f"{out}.y", dtype).reshape(y_ref.shape), y_ref)
    h_ref = state[0] if lstm else state
    np.testing.assert_array_equal(np.fromfile(f"{out}.h", dtype).reshape(h_ref.shape), h_ref)
    if lstm:
        np.testing.assert_array_equal(np.fromfile(f"{out}.c", dtype).reshape(state[1].shape),
                                      state[1])


def test_c_library_loads_projection_files_now(driver, tmp_path):
    """Loading already works for projections: the failure is the run, reported clearly."""
    layer = _layer("lstm_projection_stacked_uni")
    model = _saved(layer, tmp_path)
    assert _core.frnn_validate(model.read_bytes()) == (0, "")
    x, h0, c0, _ = _inputs(layer, 2, 3)
    proc = subprocess.run([driver, str(model), "seq", "2", "3", _write(tmp_path / "x", x), "-",
                           "-", "-", str(tmp_path / "o")], capture_output=True, text=True,
                          timeout=60)
    if proc.returncode == 3:  # not yet: the run is refused, never a wrong answer
        assert "fr_forward" in proc.stderr and "cell variant" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("key", ["lstm_per_direction", "gru_per_direction_bidi",
                                 "lstm_projection"])
def test_c_fuzz_on_python_written_variant_file(driver, key, tmp_path):
    """src/tests/frnn_fuzz.c on a version-2 file written by Python: every truncation and byte
    flip rejected, every lying header / variant-block field an error or a consistent model."""
    model = _saved(_layer(key, "float64"), tmp_path)
    fuzz = os.path.join(os.path.dirname(driver), "src", "build", "frnn_fuzz")
    proc = subprocess.run([fuzz, str(model)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and ", 0 failed" in proc.stdout, proc.stdout[-2000:]


# ---- malformed version-2 files ----

def _image(key="lstm_everything_stacked_bidi", **kw):
    return frnn._encode(_layer(key, **kw))


def _edit(data, offset, fmt, value):
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return _fix_crc(b)


BAD_EDITS = [
    # (offset, struct format, value, message of the Python reader, message of the C reader)
    (64, "<I", 143, "variant block size 143", "variant block size 143"),
    (70, "<B", 1, "reserved bytes", "reserved bytes"),
    (76, "<I", 9, "reserved bytes", "reserved bytes"),
    (111, "<B", 1, "reserved bytes", "reserved bytes"),
    (68, "<B", 2, "peepholes", "peepholes"),
    (69, "<B", 3, "input_forget", "input_forget"),
    (72, "<I", (1 << 20) + 1, "proj_size", "proj_size"),
    (80, "<d", -1.0, "clip (finite", "clip (finite"),
    (80, "<d", float("nan"), "clip (finite", "clip (finite"),
    (88, "<d", float("inf"), "cell_clip (finite", "cell_clip (finite"),
    (96, "<d", 0.5, "proj_clip without a projection", "proj_clip without a projection"),
    (104, "<B", 13, "activation kind 13", "activation kind 13"),
    (112, "<d", float("inf"), "alpha / beta not finite", "alpha / beta not finite"),
    (128, "<d", 0.5, "takes no alpha", "takes no alpha"),  # softsign (slot g)
    (120 + 16, "<d", 0.5, "takes no beta", "takes no beta"),  # softsign's beta
    (72, "<I", 2, "payload size", "payload size"),  # proj_size lies: the sizes catch it
]


@pytest.mark.parametrize("offset,fmt,value,py_msg,c_msg", BAD_EDITS,
                         ids=[f"{o}:{m}" for o, _, _, m, _ in BAD_EDITS])
def test_malformed_variant_block_clear_errors(offset, fmt, value, py_msg, c_msg):
    bad = _edit(_image(), offset, fmt, value)
    with pytest.raises(ValueError, match="invalid .frnn data") as info:
        load_frnn(bad)
    assert py_msg in str(info.value)
    status, message = _core.frnn_validate(bad)
    assert status == -5 and c_msg in message, message  # FR_EFORMAT


def test_malformed_files_more():
    data = _image()
    # an unsupported version is named as such
    with pytest.raises(ValueError, match="version 4 is not supported"):
        load_frnn(_edit(data, 4, "<H", 4))
    assert _core.frnn_validate(_edit(data, 4, "<H", 4))[0] == -6  # FR_EVERSION
    # a version-2 image relabelled 1: the variant block is read as name / payload
    with pytest.raises(ValueError, match="payload size|truncated or oversized"):
        load_frnn(_edit(data, 4, "<H", 1))
    assert _core.frnn_validate(_edit(data, 4, "<H", 1))[0] == -5
    # truncated inside the variant block, and at its end
    for n in (100, 64 + 144 + 3):
        with pytest.raises(ValueError, match="variant block"):
            load_frnn(data[:n])
        assert "variant block" in _core.frnn_validate(data[:n])[1]
    # a flipped payload bit: CRC
    flipped = bytearray(data)
    flipped[300] ^= 4
    with pytest.raises(ValueError, match="CRC32"):
        load_frnn(bytes(flipped))
    # unused entries must be zero: direction 1 of a unidirectional layer, slot h of a GRU
    uni = _image("lstm_peepholes")
    with pytest.raises(ValueError, match="direction 1, slot f is unused"):
        load_frnn(_edit(uni, 107, "<B", 1))
    gru = _image("gru_clip")
    with pytest.raises(ValueError, match="direction 0, slot h is unused"):
        load_frnn(_edit(gru, 112 + 2 * 16, "<d", 1.0))
    # LSTM-only features in a GRU file
    for offset, fmt, value, what in ((68, "<B", 1, "peepholes"), (69, "<B", 1, "input_forget"),
                                     (88, "<d", 0.5, "cell_clip"), (72, "<I", 2, "proj_size")):
        bad = _edit(gru, offset, fmt, value)
        with pytest.raises(ValueError, match=f"{what} is an LSTM feature"):
            load_frnn(bad)
        assert f"{what} is an LSTM feature" in _core.frnn_validate(bad)[1]
    # recurrent_dropout with a projection (a layer with a projection has none)
    proj = _image("lstm_projection")
    bad = _edit(proj, 56, "<d", 0.25)
    with pytest.raises(ValueError, match="recurrent_dropout with a projection"):
        load_frnn(bad)
    assert "recurrent_dropout with a projection" in _core.frnn_validate(bad)[1]


def test_fuzz_python_and_c_readers_agree_on_version_2():
    """Truncations, flipped bytes and every byte of the header and the variant block rewritten
    (CRC fixed), and every float of the block set to special values: the pure-Python reader and
    the C loader accept and reject exactly the same images, with ValueError / an error status
    only."""
    images = []
    for key in ("lstm_per_direction", "gru_per_direction_bidi", "lstm_projection"):
        data = frnn._encode(_layer(key))
        images += [data[:n] for n in range(0, len(data), 3)]
        images += [bytes(b ^ (0x41 if i == j else 0) for j, b in enumerate(data))
                   for i in range(0, len(data), 11)]
        for off in range(4, 64 + 144):
            for v in (0, 1, 2, 3, 4, 7, 12, 13, 0x80, 0xFF):
                m = bytearray(data)
                m[off] = v
                images.append(_fix_crc(m))
        for off in range(80, 64 + 144, 8):
            if 104 <= off < 112:
                continue
            for v in (0.0, -0.0, 1.0, -1.0, 0.3, 1e300, float("inf"), float("nan")):
                images.append(_edit(data, off, "<d", v))
    accepted = 0
    for img in images:
        try:
            load_frnn(img)
            py = True
        except ValueError:
            py = False
        c = _core.frnn_validate(img)[0] == 0
        assert py == c, (len(img), img[:208].hex())
        accepted += py
    assert 0 < accepted < len(images) // 2  # some edits are valid (other activations, clips)
