"""int8 weights (layer.quantize): kernels against a numpy model of the same integer arithmetic,
layers against the numpy reference with quantized matmuls, and the promises of the float path
(thread count, batch composition, streaming, masks, stacks, directions)."""
import numpy as np
import pytest

import fastrnn
from fastrnn import _core
from reference import rnn_forward

KERNELS = ["int8-baseline", "int8-avx2", "int8-avxvnni", "int8-avx512vnni"]
F32 = np.float32


# ---- numpy model of the int8 scheme (fastrnn.h, "Reduced precision") ----

def np_quantize_weights(w):
    """(q int32 (K, N), scale float32 (N,)) of a float32 (K, N) matrix."""
    w = np.asarray(w, F32)
    scale = (np.abs(w).max(axis=0) / F32(127)).astype(F32)
    safe = np.where(scale > 0, scale, F32(1))
    q = np.clip(np.rint(w / safe), -127, 127).astype(np.int32)
    return np.where(scale > 0, q, 0), scale


def np_quantize_rows(x):
    """(a int32 (M, K), s float32 (M,)) of float32 rows."""
    x = np.asarray(x, F32)
    amax = np.abs(x).max(axis=1)
    finite = np.isfinite(x).all(axis=1)
    s = (amax / F32(127)).astype(F32)
    small = amax < np.finfo(F32).tiny
    safe = np.where(finite & ~small, s, F32(1))[:, None]
    with np.errstate(invalid="ignore"):
        a = np.clip(np.rint(x / safe), -127, 127)
    a = np.where((finite & ~small)[:, None], a, 0).astype(np.int32)
    s = np.where(small, F32(0), s)
    s = np.where(finite, s, F32(np.nan))
    return a, s.astype(F32)


def np_layout(q):
    """The kernels' byte order of an int8 (K, N) matrix (fastrnn.h): q[k][c] at
    (c // 16) * K4 * 64 + (k // 4) * 64 + (c % 16) * 4 + k % 4."""
    K, N = q.shape
    K4 = (K + 3) // 4
    k, c = np.arange(K)[:, None], np.arange(N)[None, :]
    out = np.zeros(K4 * 4 * N, np.int8)
    out[(c // 16) * K4 * 64 + (k // 4) * 64 + (c % 16) * 4 + k % 4] = q
    return out


def np_qgemm(a, s, q, scale, bias=None):
    acc = a.astype(np.int64) @ q.astype(np.int64)
    assert np.abs(acc).max(initial=0) < 2 ** 31
    m = (s[:, None] * scale[None, :]).astype(F32)
    with np.errstate(invalid="ignore"):
        out = (acc.astype(F32) * m).astype(F32)
    return out if bias is None else (bias[None, :] + out).astype(F32)


def kernel_matrix(w):
    """quantize_int8 of a float32 (K, N) matrix, checked against the numpy model."""
    qm, scale = _core.quantize_int8(np.ascontiguousarray(w, F32), w.shape[1])
    data, colsum = _core.pack_int8(qm, w.shape[1])
    q, ref_scale = np_quantize_weights(w)
    np.testing.assert_array_equal(scale, ref_scale)
    np.testing.assert_array_equal(qm, q)
    np.testing.assert_array_equal(data, np_layout(q))
    np.testing.assert_array_equal(colsum, q.sum(axis=0))
    return (data, scale, colsum), q


def run_kernel(name, a_int, s, qmatrix, K, c0, n, bias=None):
    a_u8 = np.full((a_int.shape[0], (K + 3) // 4 * 4), 128, np.uint8)
    a_u8[:, :K] = a_int + 128
    out = _core.qgemm_test(name, a_u8, np.ascontiguousarray(s, F32), qmatrix, K, c0, n, bias)
    if out is None:
        pytest.skip(f"{name} is not available on this CPU")
    return out


# ---- kernels ----

@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("K,N,M", [(1, 16, 1), (3, 32, 2), (4, 48, 5), (37, 96, 7),
                                   (256, 64, 4), (513, 80, 9)])
def test_int8_kernels_match_the_integer_model_bitwise(kernel, K, N, M):
    rng = np.random.default_rng(K * 1000 + N + M)
    w = rng.standard_normal((K, N)).astype(F32)
    w[:, 5] = 0  # a zero column: scale 0
    qmatrix, q = kernel_matrix(w)
    a, s = np_quantize_rows(rng.standard_normal((M, K)).astype(F32))
    bias = rng.standard_normal(N).astype(F32)
    for c0, n in [(0, N), (16, N - 16), (N - 16, 16)]:
        if n <= 0:
            continue
        for b in (None, bias):
            out = run_kernel(kernel, a, s, qmatrix, K, c0, n, b)
            ref = np_qgemm(a, s, q[:, c0:c0 + n], qmatrix[1][c0:c0 + n],
                           None if b is None else b[c0:c0 + n])
            np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("K", [1024, 65536])
def test_int8_kernels_worst_case_sums_do_not_saturate(kernel, K):
    """Every product at its extreme (+-127 * +-127, and the unsigned offset form 255 or 1
    against +-127): a kernel that summed pairs in int16 (vpmaddubsw) would saturate at 32767;
    the sums must be exact up to the largest K allowed (65536: |sum| ~ 1.06e9)."""
    N = 32
    w = np.where(np.arange(N) % 2 == 0, F32(1), F32(-1))[None, :].repeat(K, axis=0)
    qmatrix, q = kernel_matrix(w)
    assert np.abs(q).min() == 127
    a = np.stack([np.full(K, 127), np.full(K, -127),
                  np.where(np.arange(K) % 2 == 0, 127, -127)]).astype(np.int32)
    s = np.ones(3, F32)
    out = run_kernel(kernel, a, s, qmatrix, K, 0, N)
    exact = a.astype(np.int64) @ q.astype(np.int64)
    assert np.abs(exact).max() == 127 * 127 * K
    np.testing.assert_array_equal(out, (exact.astype(F32) * qmatrix[1][None, :]).astype(F32))


@pytest.mark.parametrize("kernel", KERNELS)
def test_activation_quantizer_rules(kernel):
    if _core.quantize_rows_u8(kernel, np.zeros((1, 1), F32)) is None:
        pytest.skip(f"{kernel} is not available on this CPU")
    tiny = np.finfo(F32).tiny
    x = np.array([[0.5, -1.0, 0.25, 0.0, 1e-3],
                  [0.0, 0.0, 0.0, 0.0, 0.0],
                  [tiny / 4, -tiny / 8, 0, 0, 0],        # denormals only: a zero row
                  [1.0, np.nan, 2.0, 0, 0],
                  [1.0, np.inf, 2.0, 0, 0],
                  [3.0, 1.5, -0.75, 2.9999, 1e-30]], F32)
    a_u8, s = _core.quantize_rows_u8(kernel, x)
    a, s_ref = np_quantize_rows(x)
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_array_equal(a_u8[:, :5].astype(np.int32) - 128, a)
    assert (a_u8[:, 5:] == 128).all()  # padding to 4: the offset (a = 0)
    assert s[1] == 0 and s[2] == 0 and np.isnan(s[3]) and np.isnan(s[4])
    assert list(a[0]) == [64, -127, 32, 0, 0]  # 63.5 rounds to even
    # Long rows take the vector loops; ties (k + 0.5) * s must round to even there too.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 203)).astype(F32)
    x[:, 0] = 127 / 2  # amax 63.5 -> s = 0.5: x = 1.25 * s rounds to 2 ... ties below
    x[:, 1:40] = (np.arange(39) + 0.5).astype(F32) / 2
    a_u8, s = _core.quantize_rows_u8(kernel, x)
    a, s_ref = np_quantize_rows(x)
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_array_equal(a_u8[:, :203].astype(np.int32) - 128, a)


def test_quantize_and_pack_refuse_bad_weights():
    w = np.ones((4, 16), F32)
    w[2, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        _core.quantize_int8(w, 16)
    q = np.ones((4, 16), np.int8)
    q[1, 1] = -128
    with pytest.raises(ValueError, match="-127, 127"):
        _core.pack_int8(q, 16)
    with pytest.raises(ValueError, match="multiple of 16"):
        _core.pack_int8(np.ones((4, 24), np.int8), 24)


# ---- layers against the reference with quantized matmuls ----

class _QMat:
    """A weight matrix of the reference whose products follow the int8 scheme: the row
    (float32) is quantized, multiplied in integers and dequantized."""
    __array_ufunc__ = None  # numpy defers `x @ self` to __rmatmul__

    def __init__(self, q, scale):
        self.q, self.scale = q, scale
        self.shape = q.shape

    def __rmatmul__(self, x):
        x = np.asarray(x, F32).reshape(1, -1)
        a, s = np_quantize_rows(x)
        return np_qgemm(a, s, self.q, self.scale)[0].astype(np.float64)


def reference_params(qlayer):
    """The quantized layer's state_dict with kernel / recurrent as _QMat."""
    sd = qlayer.state_dict()
    params = {}
    for key, value in sd.items():
        if key.endswith("_scale"):
            continue
        if key.endswith(".kernel") or key.endswith(".recurrent"):
            params[key] = _QMat(value.astype(np.int32), sd[key + "_scale"])
        else:
            params[key] = value
    return params


CASES = [("lstm", {}), ("gru", {"reset_after": True}), ("gru", {"reset_after": False}),
         ("lstm", {"peepholes": True, "clip": 3.0}), ("gru", {"activation": "relu"})]


def make(cell, I, H, **kw):
    cls = fastrnn.LSTM if cell == "lstm" else fastrnn.GRU
    layer = cls(I, H, seed=3, **kw)
    rng = np.random.default_rng(5)
    sd = {k: (v + rng.normal(0, 0.1, v.shape)).astype(v.dtype)
          for k, v in layer.state_dict().items()}
    layer.load_state_dict(sd)
    return layer


@pytest.mark.parametrize("cell,kw", CASES)
@pytest.mark.parametrize("layout", ["plain", "masked-bidirectional-stack", "reverse-state"])
def test_int8_layer_matches_reference_with_quantized_matmuls(cell, kw, layout, isa):
    rng = np.random.default_rng(1)
    B, T, I, H = 4, 7, 6, 20
    opts = dict(kw)
    call = {}
    ref_opts = {}
    if layout == "masked-bidirectional-stack":
        opts.update(bidirectional=True, num_layers=2, masked_output="carry")
        mask = np.ones((B, T), bool)
        mask[1, 4:] = False
        mask[2, :] = False
        mask[3, ::2] = False
        call["mask"] = mask
        ref_opts.update(mask=mask, bidirectional=True, num_layers=2, masked_output="carry")
    elif layout == "reverse-state":
        opts.update(reverse=True)
        h0 = rng.normal(size=(1, B, H)).astype(F32)
        state = (h0, rng.normal(size=(1, B, H)).astype(F32)) if cell == "lstm" else h0
        call["initial_state"] = state
        ref_opts.update(reverse=True, initial_state=state)
    layer = make(cell, I, H, **opts)
    q = layer.quantize("int8")
    x = rng.normal(size=(B, T, I)).astype(F32)
    out, st = q(x, **call)
    variant = {k: v for k, v in kw.items() if k != "reset_after"}
    ref_out, ref_st = rnn_forward(cell, reference_params(q), x, hidden_size=H,
                                  reset_after=kw.get("reset_after", True), **variant,
                                  **ref_opts)
    # The reference carries h in float64, the kernels in float32: a quantized activation can
    # land one step apart, which moves a product by ~|h| / 127 * |w|.
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=2e-3)
    assert np.abs(out - ref_out).mean() < 2e-4
    for got, want in zip(st if isinstance(st, tuple) else (st,),
                         ref_st if isinstance(ref_st, tuple) else (ref_st,)):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_int8_error_against_float32_is_small(cell):
    """Quantization noise, not a wrong gate order or scale: outputs stay within a few percent
    of the activations' range of the float32 layer, and much closer on average."""
    rng = np.random.default_rng(2)
    layer = make(cell, 64, 128)
    x = rng.normal(size=(8, 50, 64)).astype(F32)
    ref, _ = layer(x)
    out, _ = layer.quantize()(x)
    err = np.abs(out - ref)
    assert err.max() < 0.06, err.max()
    assert err.mean() < 5e-3, err.mean()
    assert err.mean() > 0  # it really runs on int8 weights


# ---- determinism, streaming, batch composition ----

@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("B,H", [(24, 40), (3, 200)])  # row split; hidden-unit split
def test_int8_results_do_not_depend_on_thread_count(cell, B, H):
    rng = np.random.default_rng(3)
    q = make(cell, 16, H, bidirectional=True).quantize()
    x = rng.normal(size=(B, 9, 16)).astype(F32)
    lengths = rng.integers(0, 10, size=B)
    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(1)
        one = q(x, lengths=lengths)[0]
        fastrnn.set_num_threads(2)
        two = q(x, lengths=lengths)[0]
    finally:
        fastrnn.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_int8_row_alone_equals_row_in_batch(cell):
    rng = np.random.default_rng(4)
    q = make(cell, 12, 33, reset_after=False).quantize() if cell == "gru" else \
        make(cell, 12, 33).quantize()
    x = rng.normal(size=(11, 6, 12)).astype(F32)
    full = q(x)[0]
    for b in (0, 5, 10):
        np.testing.assert_array_equal(q(x[b:b + 1])[0], full[b:b + 1])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_int8_step_equals_whole_sequence(cell):
    rng = np.random.default_rng(6)
    q = make(cell, 5, 24, num_layers=2).quantize()
    x = rng.normal(size=(3, 8, 5)).astype(F32)
    whole, whole_state = q(x)
    state = None
    for t in range(8):
        y, state = q.step(x[:, t], state)
        np.testing.assert_array_equal(y, whole[:, t])
    for got, want in zip(state if isinstance(state, tuple) else (state,),
                         whole_state if isinstance(whole_state, tuple) else (whole_state,)):
        np.testing.assert_array_equal(got, want)


def test_int8_avx512_vnni_gives_the_avx2_bits():
    """Both int8 kernels return the same products (exact integers, the same float operations),
    and the epilogues of the two ISAs give the same bits: whole layers agree bitwise."""
    if not {"avx2", "avx512"} <= set(_core.available_isas()):
        pytest.skip("AVX-512 and AVX2 kernels are not both available on this CPU")
    rng = np.random.default_rng(8)
    before = _core.get_isa()
    results, names = [], []
    try:
        for isa in ("avx2", "avx512"):
            _core.set_isa(isa)
            names.append(_core.int8_kernel_name())
            q = make("lstm", 40, 72, bidirectional=True).quantize()
            x = rng.normal(size=(6, 12, 40)).astype(F32) if not results else x
            results.append(q(x, lengths=[12, 3, 0, 7, 12, 1])[0])
    finally:
        _core.set_isa(before)
    assert names[0] in ("int8-avx2", "int8-avxvnni")  # AVX-VNNI where the CPU has it
    np.testing.assert_array_equal(results[0], results[1])


def test_int8_nan_input_stays_in_its_row():
    q = make("lstm", 8, 16).quantize()
    x = np.ones((3, 4, 8), F32)
    x[1, 2, 3] = np.nan
    out = q(x)[0]
    assert np.isnan(out[1, 2:]).all() and np.isfinite(out[1, :2]).all()
    np.testing.assert_array_equal(out[0], out[2])


# ---- API ----

def test_quantized_layer_api():
    layer = make("gru", 6, 10, num_layers=2)
    q = layer.quantize("int8")
    assert q.quantization == "int8" and not q.trainable and layer.quantization is None
    assert "quantization='int8'" in repr(q)
    sd = q.state_dict()
    k = sd["layer1.forward.reset.recurrent"]
    assert k.dtype == np.int8 and k.shape == (10, 10) and np.abs(k).max() == 127
    scale = sd["layer1.forward.reset.recurrent_scale"]
    assert scale.dtype == F32 and scale.shape == (10,)
    w = layer.state_dict()["layer1.forward.reset.recurrent"]
    np.testing.assert_allclose(k * scale, w, rtol=0, atol=float(scale.max()) / 2 * 1.0001)
    assert sd["layer0.forward.update.bias"].dtype == F32
    np.testing.assert_array_equal(q.gate("reset", layer=1).recurrent, k * scale)
    with pytest.raises(ValueError):
        q.gate("reset").kernel[...] = 0  # read-only views
    x = np.zeros((1, 3, 6), F32)
    with pytest.raises(RuntimeError, match="inference only"):
        q(x, training=True)
    with fastrnn.learning_phase(1):
        with pytest.raises(RuntimeError, match="inference only"):
            q(x)
    with pytest.raises(RuntimeError, match="inference only"):
        q.backward(np.zeros((1, 3, 10), F32))
    with pytest.raises(TypeError, match="read-only"):
        q.load_state_dict(layer.state_dict())
    with pytest.raises(ValueError, match="already quantized"):
        q.quantize()
    with pytest.raises(ValueError, match="scheme"):
        layer.quantize("int4")
    with pytest.raises(NotImplementedError, match="proj"):
        fastrnn.LSTM(4, 8, proj_size=3).quantize()


def test_float64_layer_quantizes_to_a_float32_layer():
    layer = make("lstm", 4, 8)
    wide = fastrnn.LSTM(4, 8, dtype="float64")
    wide.load_state_dict(layer.state_dict())
    x = np.random.default_rng(0).normal(size=(2, 5, 4))
    a = wide.quantize()(x)[0]
    assert a.dtype == F32
    np.testing.assert_array_equal(a, layer.quantize()(x.astype(F32))[0])


# ---- files ----

@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_int8_npz_round_trip_gives_the_same_bits(cell, tmp_path):
    q = make(cell, 6, 20, bidirectional=True, num_layers=2, name="enc").quantize()
    path = tmp_path / "q.npz"
    fastrnn.save(q, path)
    back = fastrnn.load(path)
    assert back.quantization == "int8" and back.name == "enc" and not back.trainable
    x = np.random.default_rng(0).normal(size=(3, 7, 6)).astype(F32)
    np.testing.assert_array_equal(back(x, lengths=[7, 2, 0])[0], q(x, lengths=[7, 2, 0])[0])
    sd, sd_back = q.state_dict(), back.state_dict()
    assert sd.keys() == sd_back.keys()
    for key in sd:
        assert sd[key].dtype == sd_back[key].dtype
        np.testing.assert_array_equal(sd[key], sd_back[key])


def test_int8_npz_is_refused_by_version_and_checked(tmp_path):
    import json
    q = make("lstm", 4, 16).quantize()
    path = tmp_path / "q.npz"
    fastrnn.save(q, path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    config = json.loads(str(arrays["__config__"]))
    assert config["version"] == 3 and config["quantization"] == "int8"
    # a scale missing: a clear error, not float weights taken from int8 values
    broken = dict(arrays)
    del broken["layer0.forward.cell.recurrent_scale"]
    bad = tmp_path / "bad.npz"
    with open(bad, "wb") as f:
        np.savez(f, **broken)
    with pytest.raises(ValueError, match="recurrent_scale"):
        fastrnn.load(bad)
    # int8 values out of the symmetric range
    broken = dict(arrays)
    broken["layer0.forward.input.kernel"] = np.full((4, 16), -128, np.int8)
    with open(bad, "wb") as f:
        np.savez(f, **broken)
    with pytest.raises(ValueError, match="-127, 127"):
        fastrnn.load(bad)


def test_int8_layers_are_not_written_to_formats_that_cannot_hold_them(tmp_path):
    q = make("gru", 4, 8).quantize()
    for ext in (".onnx", ".pt", ".safetensors", ".keras"):
        with pytest.raises(ValueError, match="int8 weights"):
            fastrnn.save(q, tmp_path / f"q{ext}")


def test_convert_quantize_cli(tmp_path):
    from fastrnn.__main__ import main
    layer = make("lstm", 5, 12)
    src, out = tmp_path / "f.npz", tmp_path / "q.npz"
    fastrnn.save(layer, src)
    assert main(["convert", str(src), "-o", str(out), "--quantize", "int8"]) == 0
    q = fastrnn.load(out)
    x = np.random.default_rng(1).normal(size=(2, 4, 5)).astype(F32)
    np.testing.assert_array_equal(q(x)[0], layer.quantize()(x)[0])
    assert main(["convert", str(src), "-o", str(tmp_path / "q.frnn"), "--quantize", "int8"]) == 0
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "q.frnn")(x)[0], q(x)[0])
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(src), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8"])
    assert exc.value.code == 2


# ---- bf16 ----

BF16_KERNELS = ["bf16-baseline", "bf16-avx2", "bf16-avx512"]


def np_bf16(x):
    """float32 values of the bfloat16 rounding (fastrnn.h): nearest even, NaN kept, magnitudes
    below FLT_MIN as signed zeros."""
    x = np.ascontiguousarray(x, F32)
    u = x.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32) << 16
    r = np.where(np.abs(x) < np.finfo(F32).tiny, u.astype(np.uint32) & 0x80000000, r)
    r = np.where(np.isnan(x), (u.astype(np.uint32) & 0xFFFF0000) | 0x00400000, r)
    return r.astype(np.uint32).view(F32)


def np_bf16_gemm(a, w, bias=None):
    """out = init + per pair of rows, the odd then the even product, in float32."""
    M, K = a.shape
    if K % 2:
        a = np.concatenate([a, np.zeros((M, 1), F32)], axis=1)
        w = np.concatenate([w, np.zeros((1, w.shape[1]), F32)], axis=0)
    out = np.zeros((M, w.shape[1]), F32) if bias is None else \
        np.repeat(bias[None, :], M, axis=0).astype(F32)
    for k in range(0, a.shape[1], 2):
        out = (out + a[:, k + 1:k + 2] * w[k + 1]).astype(F32)
        out = (out + a[:, k:k + 1] * w[k]).astype(F32)
    return out


def bf16_rows(kernel, x):
    got = _core.quantize_rows_u8(kernel, np.ascontiguousarray(x, F32))
    if got is None:
        pytest.skip(f"{kernel} is not available on this CPU")
    a = got[0]
    return a if a.dtype == F32 else (a.astype(np.uint32) << 16).view(F32)


@pytest.mark.parametrize("kernel", BF16_KERNELS)
def test_bf16_rounding_matches_numpy(kernel):
    rng = np.random.default_rng(0)
    tiny = np.finfo(F32).tiny
    x = rng.normal(size=(5, 67)).astype(F32) * np.logspace(-3, 3, 67).astype(F32)
    x[0, :6] = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), tiny / 4, -tiny / 2, np.nan]
    x[1, :3] = [np.inf, -np.inf, 3.3895314e38]
    got = bf16_rows(kernel, x)[:, :67]
    want = np_bf16(x)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert got[0, 0] == 1 and got[0, 1] == 1 + 4 * 2 ** -8  # ties to even
    w = rng.normal(size=(9, 32)).astype(F32)
    from fastrnn.layers import _bf16_matrix
    np.testing.assert_array_equal(_bf16_matrix(_core.pack_bf16(w, 32), 32, 9), np_bf16(w))


@pytest.mark.parametrize("kernel", BF16_KERNELS)
@pytest.mark.parametrize("K,N,M", [(1, 16, 1), (3, 32, 2), (8, 48, 5), (37, 96, 7), (256, 64, 4)])
def test_bf16_kernels_match_the_model_bitwise(kernel, K, N, M):
    rng = np.random.default_rng(K * 100 + N + M)
    w = rng.standard_normal((K, N)).astype(F32)
    data = _core.pack_bf16(w, N)
    x = rng.standard_normal((M, K)).astype(F32)
    raw = _core.quantize_rows_u8(kernel, x)
    if raw is None:
        pytest.skip(f"{kernel} is not available on this CPU")
    bias = rng.standard_normal(N).astype(F32)
    for c0, n in [(0, N), (N - 16, 16)]:
        for b in (None, bias):
            out = _core.qgemm_test(kernel, raw[0], None, (data, None, None), K, c0, n, b)
            ref = np_bf16_gemm(np_bf16(x), np_bf16(w)[:, c0:c0 + n],
                               None if b is None else b[c0:c0 + n])
            np.testing.assert_array_equal(out, ref)


class _BMat:
    """A reference weight matrix whose products follow the bf16 scheme."""
    __array_ufunc__ = None

    def __init__(self, w):
        self.w, self.shape = np_bf16(w), w.shape

    def __rmatmul__(self, x):
        return np_bf16_gemm(np_bf16(np.asarray(x, F32).reshape(1, -1)), self.w)[0].astype(
            np.float64)


@pytest.mark.parametrize("cell,kw", CASES[:3])
def test_bf16_layer_matches_reference(cell, kw, isa):
    rng = np.random.default_rng(11)
    B, T, I, H = 3, 6, 5, 20
    layer = make(cell, I, H, bidirectional=True, **kw)
    q = layer.quantize("bf16")
    sd = q.state_dict()
    assert all((v.view(np.uint32) & 0xFFFF).max() == 0 for k, v in sd.items()
               if k.endswith(".kernel") or k.endswith(".recurrent"))
    params = {k: _BMat(v) if k.endswith(".kernel") or k.endswith(".recurrent") else v
              for k, v in sd.items()}
    x = rng.normal(size=(B, T, I)).astype(F32)
    mask = np.ones((B, T), bool)
    mask[1, 3:] = False
    out, _ = q(x, mask=mask)
    ref, _ = rnn_forward(cell, params, x, hidden_size=H, bidirectional=True, mask=mask,
                         reset_after=kw.get("reset_after", True))
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-3)
    assert np.abs(out - layer(x, mask=mask)[0]).max() < 0.02  # near the float layer


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bf16_determinism_step_and_isas(cell):
    rng = np.random.default_rng(12)
    layer = make(cell, 16, 40, num_layers=2)
    x = rng.normal(size=(9, 7, 16)).astype(F32)
    before_t, before_isa = fastrnn.get_num_threads(), _core.get_isa()
    try:
        results = {}
        for isa in [i for i in ("avx2", "avx512") if i in _core.available_isas()]:
            _core.set_isa(isa)
            q = layer.quantize("bf16")
            fastrnn.set_num_threads(1)
            one = q(x)[0]
            fastrnn.set_num_threads(2)
            np.testing.assert_array_equal(q(x)[0], one)
            np.testing.assert_array_equal(q(x[4:5])[0], one[4:5])
            state = None
            for t in range(7):
                y, state = q.step(x[:, t], state)
                np.testing.assert_array_equal(y, one[:, t])
            results[isa] = one
        if len(results) == 2:  # the AVX2 emulation gives vdpbf16ps' bits on these values
            np.testing.assert_array_equal(results["avx2"], results["avx512"])
    finally:
        fastrnn.set_num_threads(before_t)
        _core.set_isa(before_isa)


def test_bf16_files_and_api(tmp_path):
    layer = make("gru", 6, 20, bidirectional=True)
    q = layer.quantize("bf16")
    assert q.quantization == "bf16" and not q.trainable and "quantization='bf16'" in repr(q)
    fastrnn.save(q, tmp_path / "b.npz")
    back = fastrnn.load(tmp_path / "b.npz")
    x = np.random.default_rng(0).normal(size=(2, 5, 6)).astype(F32)
    assert back.quantization == "bf16"
    np.testing.assert_array_equal(back(x)[0], q(x)[0])
    fastrnn.save(q, tmp_path / "b.frnn")  # bfloat16 bits, half the float32 file
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "b.frnn")(x)[0], q(x)[0])
    with pytest.raises(ValueError, match="bf16 weights"):
        fastrnn.save(q, tmp_path / "b.onnx")
    with pytest.raises(RuntimeError, match="inference only"):
        q(x, training=True)
    from fastrnn.__main__ import main
    fastrnn.save(layer, tmp_path / "f.npz")
    assert main(["convert", str(tmp_path / "f.npz"), "-o", str(tmp_path / "c.npz"),
                 "--quantize", "bf16"]) == 0
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "c.npz")(x)[0], q(x)[0])
