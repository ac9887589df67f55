"""Input validation of the public API (docs/api.md): bad input raises a clear ValueError /
TypeError whose message names the problem, and never crashes; plus positive checks of the
documented conversions (dtype, non-contiguous input, integer masks, empty batch / time, NaN at
masked steps)."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastrnn

try:  # tests/ may or may not be a package
    from . import reference as ref
except ImportError:
    import reference as ref

CELLS = [fastrnn.LSTM, fastrnn.GRU]
CELL_IDS = ["lstm", "gru"]


def states(cell_cls, state):
    """LSTM (h, c) / GRU h -> list of arrays."""
    return list(state) if cell_cls is fastrnn.LSTM else [state]


def make_state(cell_cls, rng, shape, dtype=np.float64):
    h = rng.normal(size=shape).astype(dtype)
    if cell_cls is fastrnn.LSTM:
        return (h, rng.normal(size=shape).astype(dtype))
    return h


def assert_same_result(cell_cls, a, b, exact=True):
    (oa, sa), (ob, sb) = a, b
    check = assert_array_equal if exact else (lambda u, v: assert_allclose(u, v, rtol=0,
                                                                           atol=1e-6))
    assert oa.shape == ob.shape and oa.dtype == ob.dtype
    check(oa, ob)
    for u, v in zip(states(cell_cls, sa), states(cell_cls, sb)):
        assert u.shape == v.shape and u.dtype == v.dtype
        check(u, v)


@pytest.fixture(params=CELLS, ids=CELL_IDS)
def cell(request):
    return request.param


@pytest.fixture
def layer(cell):
    return cell(3, 4, seed=0)


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# x


@pytest.mark.parametrize("shape", [(5, 3), (3,), (1, 2, 5, 3), ()])
def test_x_wrong_rank(layer, shape):
    with pytest.raises(ValueError, match=r"x must have shape \(batch, time, input_size\)"):
        layer(np.zeros(shape, np.float32))


def test_x_wrong_feature_size(layer):
    with pytest.raises(ValueError, match=r"x has 4 features.*input_size=3"):
        layer(np.zeros((2, 5, 4), np.float32))


@pytest.mark.parametrize("bad", [
    np.zeros((2, 5, 3), np.complex64),
    np.zeros((2, 5, 3), np.complex128),
    np.zeros((2, 5, 3), object),
    np.full((2, 5, 3), "a"),
    "not an array",
    [[["a", "b", "c"]]],
], ids=["complex64", "complex128", "object", "str_array", "str", "nested_str"])
def test_x_bad_dtype(layer, bad):
    with pytest.raises(TypeError, match=r"x must hold real numbers, got dtype"):
        layer(bad)


def test_x_list_float64_to_float32_layer(cell):
    layer = cell(3, 4, seed=1, dtype="float32")
    x64 = np.random.default_rng(1).normal(size=(2, 4, 3))
    out, st = layer(x64.tolist())
    assert out.dtype == np.float32
    for s in states(cell, st):
        assert s.dtype == np.float32
    # Converted to float32 first (as Keras does): identical to a float32 array input.
    assert_same_result(cell, (out, st), layer(x64.astype(np.float32)))
    assert_same_result(cell, (out, st), layer(x64))


def test_x_float32_to_float64_layer(cell):
    layer = cell(3, 4, seed=1, dtype="float64")
    x32 = np.random.default_rng(1).normal(size=(2, 4, 3)).astype(np.float32)
    out, st = layer(x32)
    assert out.dtype == np.float64
    assert_same_result(cell, (out, st), layer(x32.astype(np.float64)))


def test_x_integer_and_bool_input(cell):
    layer = cell(3, 4, seed=1)
    xi = np.random.default_rng(1).integers(-2, 3, size=(2, 4, 3))
    assert_same_result(cell, layer(xi), layer(xi.astype(np.float32)))
    xb = xi > 0
    assert_same_result(cell, layer(xb), layer(xb.astype(np.float32)))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_x_non_contiguous(cell, dtype, bidirectional):
    layer = cell(3, 17, num_layers=2, bidirectional=bidirectional, seed=2, dtype=dtype)
    rng = np.random.default_rng(2)
    D = 2 if bidirectional else 1
    s0 = make_state(cell, rng, (2 * D, 4, 17), dtype)
    mask = rng.random((4, 6)) < 0.7

    views = {
        "transposed": rng.normal(size=(6, 4, 3)).astype(dtype).transpose(1, 0, 2),
        "time_stride": rng.normal(size=(4, 12, 3)).astype(dtype)[:, ::2],
        "feature_stride": rng.normal(size=(4, 6, 6)).astype(dtype)[:, :, ::2],
        "batch_reversed": rng.normal(size=(4, 6, 3)).astype(dtype)[::-1],
        "fortran": np.asfortranarray(rng.normal(size=(4, 6, 3)).astype(dtype)),
    }
    for name, xv in views.items():
        assert not xv.flags.c_contiguous, name
        xc = np.ascontiguousarray(xv)
        assert_same_result(cell, layer(xv), layer(xc))
        assert_same_result(cell, layer(xv, mask=mask, initial_state=s0),
                           layer(xc, mask=mask, initial_state=s0))
    # non-contiguous mask and initial state too
    xc = np.ascontiguousarray(views["transposed"])
    mask_nc = np.asfortranarray(mask)
    s0_nc = tuple(np.asfortranarray(s) for s in s0) if cell is fastrnn.LSTM else \
        np.asfortranarray(s0)
    assert_same_result(cell, layer(xc, mask=mask_nc, initial_state=s0_nc),
                       layer(xc, mask=mask, initial_state=s0))


def test_step_x_validation(layer):
    with pytest.raises(ValueError, match=r"x must have shape \(batch, input_size\)"):
        layer.step(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r"x has 4 features.*input_size=3"):
        layer.step(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match=r"x must hold real numbers"):
        layer.step(np.zeros((2, 3), complex))


# ----------------------------------------------------------------------------------------------
# mask / lengths


@pytest.mark.parametrize("shape", [(2, 4), (2, 6), (1, 5), (5, 2), (2, 5, 1), (10,)])
def test_mask_wrong_shape(layer, x, shape):
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 5\)"):
        layer(x, mask=np.ones(shape, bool))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, object])
def test_mask_float_dtype(layer, x, dtype):
    with pytest.raises(TypeError, match=r"mask must be bool or 0/1 integers"):
        layer(x, mask=np.ones((2, 5), dtype))


def test_mask_str(layer, x):
    with pytest.raises(TypeError, match=r"mask must be bool or 0/1 integers"):
        layer(x, mask="yes")


@pytest.mark.parametrize("value, dtype", [
    (2, np.int64), (-1, np.int64), (255, np.int64), (2, np.int16), (-1, np.int8),
    (2, np.uint8), (255, np.uint8), (7, np.uint64),
])
def test_mask_bad_integer_value(layer, x, value, dtype):
    m = np.ones((2, 5), dtype)
    m[1, 3] = value
    with pytest.raises(ValueError, match=r"mask values must be 0 or 1"):
        layer(x, mask=m)


@pytest.mark.parametrize("lengths", [[1, 2, 3], [3], [[1, 2]], 3], ids=["3", "1", "2d", "scalar"])
def test_lengths_wrong_shape(layer, x, lengths):
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        layer(x, lengths=lengths)


@pytest.mark.parametrize("lengths", [[1.0, 2.0], np.array([1, 2], np.float32), [True, False],
                                     ["1", "2"]], ids=["float", "float32", "bool", "str"])
def test_lengths_bad_dtype(layer, x, lengths):
    with pytest.raises(TypeError, match=r"lengths must be integers"):
        layer(x, lengths=lengths)


@pytest.mark.parametrize("lengths", [[-1, 2], [2, 6], [0, 100], [-5, 9]])
def test_lengths_out_of_range(layer, x, lengths):
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 5\]"):
        layer(x, lengths=lengths)


def test_mask_and_lengths(layer, x):
    with pytest.raises(ValueError, match=r"either mask or lengths, not both"):
        layer(x, mask=np.ones((2, 5), bool), lengths=[5, 5])


@pytest.mark.parametrize("int_dtype", [np.int8, np.uint8, np.int32, np.int64, np.uint64])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_integer_mask_equals_bool_mask(cell, int_dtype, bidirectional):
    layer = cell(3, 5, num_layers=2, bidirectional=bidirectional, seed=3)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 7, 3)).astype(np.float32)
    mb = rng.random((4, 7)) < 0.6
    mb[0] = True
    mb[1] = False
    expected = layer(x, mask=mb)
    assert_same_result(cell, layer(x, mask=mb.astype(int_dtype)), expected)
    # and with masked_output="carry"
    layer_c = cell(3, 5, num_layers=2, bidirectional=bidirectional, seed=3,
                   masked_output="carry")
    assert_same_result(cell, layer_c(x, mask=mb.astype(int_dtype)), layer_c(x, mask=mb))


def test_all_ones_mask_equals_no_mask(cell):
    layer = cell(3, 5, bidirectional=True, seed=4)
    x = np.random.default_rng(4).normal(size=(3, 6, 3))
    expected = layer(x)
    assert_same_result(cell, layer(x, mask=np.ones((3, 6), bool)), expected)
    assert_same_result(cell, layer(x, mask=np.ones((3, 6), np.int64)), expected)
    assert_same_result(cell, layer(x, lengths=np.full(3, 6)), expected)


@pytest.mark.parametrize("int_dtype", [np.int8, np.int32, np.uint16, np.int64])
def test_lengths_integer_dtypes(cell, int_dtype):
    layer = cell(3, 5, bidirectional=True, seed=4)
    x = np.random.default_rng(4).normal(size=(3, 6, 3))
    lengths = np.array([6, 0, 3])
    expected = layer(x, mask=ref.lengths_to_mask(lengths, 6))
    assert_same_result(cell, layer(x, lengths=lengths.astype(int_dtype)), expected)
    assert_same_result(cell, layer(x, lengths=lengths.tolist()), expected)


# ----------------------------------------------------------------------------------------------
# initial_state


@pytest.mark.parametrize("shape", [(1, 3, 4), (2, 2, 4), (1, 2, 5), (2, 4), (1, 1, 2, 4)])
def test_initial_state_wrong_shape(layer, cell, x, shape):
    good = np.zeros((1, 2, 4), np.float32)
    bad = np.zeros(shape, np.float32)
    pattern = r"initial_state\[0\] must have shape \(1, 2, 4\)"
    if cell is fastrnn.LSTM:
        with pytest.raises(ValueError, match=pattern):
            layer(x, initial_state=(bad, good))
        with pytest.raises(ValueError, match=r"initial_state\[1\] must have shape \(1, 2, 4\)"):
            layer(x, initial_state=(good, bad))
    else:
        with pytest.raises(ValueError, match=pattern):
            layer(x, initial_state=bad)
        with pytest.raises(ValueError, match=pattern):
            layer(x, initial_state=(bad,))


def test_initial_state_wrong_shape_stacked_bidirectional(cell):
    layer = cell(3, 4, num_layers=2, bidirectional=True)
    x = np.zeros((2, 5, 3), np.float32)
    bad = np.zeros((2, 2, 4), np.float32)     # num_layers only, not num_layers*num_directions
    st = (bad, bad) if cell is fastrnn.LSTM else bad
    with pytest.raises(ValueError, match=r"must have shape \(4, 2, 4\)"):
        layer(x, initial_state=st)


def test_lstm_initial_state_wrong_form(x):
    layer = fastrnn.LSTM(3, 4)
    h = np.zeros((1, 2, 4), np.float32)
    for bad in (h, (h,), (h, h, h), [h], np.zeros((2, 1, 2, 4), np.float32)):
        with pytest.raises(ValueError, match=r"initial_state for LSTM must be \(h0, c0\)"):
            layer(x, initial_state=bad)


def test_gru_initial_state_wrong_form(x):
    layer = fastrnn.GRU(3, 4)
    h = np.zeros((1, 2, 4), np.float32)
    for bad in ((h, h, h), (h, h), []):
        with pytest.raises(ValueError, match=r"initial_state for GRU must be h0 or \(h0,\)"):
            layer(x, initial_state=bad)


def test_initial_state_bad_dtype(layer, cell, x):
    h = np.zeros((1, 2, 4), complex)
    st = (h, np.zeros((1, 2, 4))) if cell is fastrnn.LSTM else h
    with pytest.raises(TypeError, match=r"initial_state\[0\] must hold real numbers"):
        layer(x, initial_state=st)


def test_gru_state_forms_equal(x):
    layer = fastrnn.GRU(3, 4, seed=5)
    h0 = np.random.default_rng(5).normal(size=(1, 2, 4))
    a = layer(x, initial_state=h0)
    assert_same_result(fastrnn.GRU, layer(x, initial_state=(h0,)), a)
    assert_same_result(fastrnn.GRU, layer(x, initial_state=[h0]), a)
    assert isinstance(a[1], np.ndarray)      # returned as h, not (h,)


def test_step_state_validation(cell):
    layer = cell(3, 4, num_layers=2)
    xt = np.zeros((2, 3), np.float32)
    bad = np.zeros((1, 2, 4), np.float32)
    st = (bad, bad) if cell is fastrnn.LSTM else bad
    with pytest.raises(ValueError, match=r"state\[0\] must have shape \(2, 2, 4\)"):
        layer.step(xt, st)
    if cell is fastrnn.LSTM:
        with pytest.raises(ValueError, match=r"must be \(h0, c0\)"):
            layer.step(xt, np.zeros((2, 2, 4), np.float32))


# ----------------------------------------------------------------------------------------------
# load_state_dict


def _perturbed(sd, rng):
    return {k: v + rng.normal(size=v.shape).astype(v.dtype) for k, v in sd.items()}


@pytest.fixture
def stacked(cell):
    return cell(3, 4, num_layers=2, bidirectional=True, seed=6)


def _assert_unchanged(layer, before):
    after = layer.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert_array_equal(after[k], before[k], err_msg=k)


def test_load_state_dict_missing_key(stacked):
    before = stacked.state_dict()
    sd = _perturbed(before, np.random.default_rng(0))
    key = f"layer1.backward.{stacked._gates[-1]}.recurrent"
    del sd[key]
    with pytest.raises(ValueError, match=r"missing keys \[" + r"'" + key.replace(".", r"\.")):
        stacked.load_state_dict(sd)
    _assert_unchanged(stacked, before)


def test_load_state_dict_unexpected_key(stacked):
    before = stacked.state_dict()
    sd = _perturbed(before, np.random.default_rng(0))
    sd["layer2.forward.bogus.kernel"] = np.zeros((8, 4), np.float32)
    with pytest.raises(ValueError, match=r"unexpected keys \['layer2\.forward\.bogus\.kernel'\]"):
        stacked.load_state_dict(sd)
    _assert_unchanged(stacked, before)


def test_load_state_dict_wrong_shape(stacked):
    before = stacked.state_dict()
    # the offending key is the last one checked, all the others are valid new values
    for key in (sorted(before)[0], sorted(before)[-1], list(before)[-1],
                "layer1.forward." + stacked._gates[0] + ".kernel"):
        sd = _perturbed(before, np.random.default_rng(0))
        shape = sd[key].shape
        sd[key] = np.zeros(shape[:-1] + (shape[-1] + 1,), np.float32)
        with pytest.raises(ValueError, match=r"state_dict\['" + key.replace(".", r"\.")
                           + r"'\] has shape"):
            stacked.load_state_dict(sd)
        _assert_unchanged(stacked, before)


@pytest.mark.parametrize("bad", [np.float32(0.5), np.zeros((1, 4)), np.zeros((4, 1)),
                                 np.zeros((1, 4, 1))], ids=["scalar", "row", "col", "3d"])
def test_load_state_dict_broadcastable_shape_rejected(stacked, bad):
    before = stacked.state_dict()
    sd = dict(before)
    key = "layer0.forward." + stacked._gates[1] + ".bias"
    sd[key] = bad
    with pytest.raises(ValueError, match=r"state_dict\['" + key.replace(".", r"\.") + r"'\]"):
        stacked.load_state_dict(sd)
    _assert_unchanged(stacked, before)


def test_load_state_dict_bad_value_dtype(stacked):
    before = stacked.state_dict()
    sd = _perturbed(before, np.random.default_rng(0))
    key = sorted(sd)[-1]
    sd[key] = np.full(sd[key].shape, "x")
    with pytest.raises(TypeError, match=r"state_dict\['" + key.replace(".", r"\.") + r"'\]"):
        stacked.load_state_dict(sd)
    _assert_unchanged(stacked, before)


def test_load_state_dict_not_a_mapping(stacked):
    with pytest.raises(TypeError, match=r"must be a mapping"):
        stacked.load_state_dict([1, 2, 3])


def test_load_state_dict_bias_keys_of_no_bias_layer(cell):
    src = cell(3, 4, seed=7)
    dst = cell(3, 4, use_bias=False, seed=8)
    before = dst.state_dict()
    assert not any(k.endswith("bias") for k in before)
    with pytest.raises(ValueError, match=r"unexpected keys \['layer0\.forward\..*\.bias'"):
        dst.load_state_dict(src.state_dict())
    _assert_unchanged(dst, before)


def test_load_state_dict_roundtrip_and_effect(stacked, cell):
    rng = np.random.default_rng(9)
    new = _perturbed(stacked.state_dict(), rng)
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    other = cell(3, 4, num_layers=2, bidirectional=True, seed=99)
    other.load_state_dict(new)
    stacked.load_state_dict({k: v.astype(np.float64) for k, v in new.items()})  # dtype converted
    got = stacked.state_dict()
    for k in new:
        assert got[k].dtype == np.float32
        assert_array_equal(got[k], new[k])
    assert_same_result(cell, stacked(x), other(x))


# ----------------------------------------------------------------------------------------------
# Constructor arguments


@pytest.mark.parametrize("dtype", ["float16", "int32", np.float16, np.int64, "complex64",
                                   "bogus", object])
def test_unsupported_dtype(cell, dtype):
    with pytest.raises(TypeError, match=r"dtype must be float32 or float64"):
        cell(3, 4, dtype=dtype)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(hidden_size=0), r"hidden_size must be a positive int"),
    (dict(hidden_size=-3), r"hidden_size must be a positive int"),
    (dict(hidden_size=2.5), r"hidden_size must be a positive int"),
    (dict(input_size=0), r"input_size must be a positive int"),
    (dict(num_layers=0), r"num_layers must be a positive int"),
    (dict(masked_output="bogus"), r"masked_output must be one of"),
    (dict(init="bogus"), r"init must be one of"),
    (dict(dropout=1.5), r"dropout must be a number in \[0, 1\)"),
    (dict(dropout=1.0), r"dropout must be a number in \[0, 1\)"),
    (dict(dropout=-0.1), r"dropout must be a number in \[0, 1\)"),
    (dict(recurrent_dropout=1.5), r"recurrent_dropout must be a number in \[0, 1\)"),
    (dict(reverse=True, bidirectional=True), r"reverse=True applies to unidirectional"),
])
def test_bad_constructor_args(cell, kwargs, pattern):
    args = dict(input_size=3, hidden_size=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        cell(args.pop("input_size"), args.pop("hidden_size"), **args)


# ----------------------------------------------------------------------------------------------
# gate() and step()


def test_gate_unknown_gate():
    with pytest.raises(ValueError, match=r"unknown gate 'update' for LSTM"):
        fastrnn.LSTM(3, 4).gate("update")
    with pytest.raises(ValueError, match=r"unknown gate 'input' for GRU"):
        fastrnn.GRU(3, 4).gate("input")


@pytest.mark.parametrize("bad", [2, -1, 1.0, True, "0"])
def test_gate_bad_layer(cell, bad):
    layer = cell(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"layer must be in \[0, 2\)"):
        layer.gate(layer._gates[0], layer=bad)


def test_gate_bad_direction(cell):
    uni = cell(3, 4)
    with pytest.raises(ValueError, match=r"direction must be one of \('forward',\)"):
        uni.gate(uni._gates[0], direction="backward")
    bi = cell(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match=r"direction must be one of"):
        bi.gate(bi._gates[0], direction="reverse")
    bi.gate(bi._gates[0], direction="backward")   # fine


def test_gate_views_are_writable(cell):
    layer = cell(3, 4, seed=10)
    x = np.random.default_rng(10).normal(size=(2, 3, 3))
    g = layer.gate(layer._gates[0])
    g.kernel[...] = 0.25
    key = f"layer0.forward.{layer._gates[0]}.kernel"
    assert_array_equal(layer.state_dict()[key], np.full((3, 4), 0.25, np.float32))
    sd = layer.state_dict()
    other = cell(3, 4, seed=11)
    other.load_state_dict(sd)
    assert_same_result(cell, layer(x), other(x))


def test_step_on_bidirectional(cell):
    layer = cell(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match=r"step\(\) needs a unidirectional"):
        layer.step(np.zeros((2, 3), np.float32))


def test_step_on_reverse(cell):
    layer = cell(3, 4, reverse=True)
    with pytest.raises(ValueError, match=r"step\(\) needs a unidirectional, forward layer"):
        layer.step(np.zeros((2, 3), np.float32))


# ----------------------------------------------------------------------------------------------
# Empty batch / empty time


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_empty_batch(cell, bidirectional, dtype):
    L, D, H = 2, 2 if bidirectional else 1, 4
    layer = cell(3, H, num_layers=L, bidirectional=bidirectional, dtype=dtype)
    x = np.zeros((0, 5, 3))
    for kw in ({}, {"lengths": np.zeros(0, np.int64)}, {"mask": np.zeros((0, 5), bool)},
               {"initial_state": make_state(cell, np.random.default_rng(0), (L * D, 0, H))}):
        out, st = layer(x, **kw)
        assert out.shape == (0, 5, D * H) and out.dtype == np.dtype(dtype)
        for s in states(cell, st):
            assert s.shape == (L * D, 0, H) and s.dtype == np.dtype(dtype)
    if not bidirectional:
        y, st = layer.step(np.zeros((0, 3)))
        assert y.shape == (0, H)
        for s in states(cell, st):
            assert s.shape == (L, 0, H)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_empty_time(cell, bidirectional, dtype):
    L, D, H, B = 2, 2 if bidirectional else 1, 4, 3
    layer = cell(3, H, num_layers=L, bidirectional=bidirectional, dtype=dtype)
    x = np.zeros((B, 0, 3))
    s0 = make_state(cell, np.random.default_rng(0), (L * D, B, H))

    out, st = layer(x)
    assert out.shape == (B, 0, D * H) and out.dtype == np.dtype(dtype)
    for s in states(cell, st):
        assert s.shape == (L * D, B, H) and s.dtype == np.dtype(dtype)
        assert np.all(s == 0)

    for kw in ({}, {"lengths": np.zeros(B, np.int64)}, {"mask": np.zeros((B, 0), bool)}):
        out, st = layer(x, initial_state=s0, **kw)
        assert out.shape == (B, 0, D * H)
        for s, init in zip(states(cell, st), states(cell, s0)):
            assert s.shape == (L * D, B, H) and s.dtype == np.dtype(dtype)
            assert_array_equal(s, init.astype(dtype))
            assert not np.shares_memory(s, init)


def test_empty_batch_and_time(cell):
    layer = cell(3, 4, bidirectional=True)
    out, st = layer(np.zeros((0, 0, 3)))
    assert out.shape == (0, 0, 8)
    for s in states(cell, st):
        assert s.shape == (2, 0, 4)


# ----------------------------------------------------------------------------------------------
# NaN at masked steps never leaks


@pytest.mark.parametrize("masked_output", ["zero", "carry"])
@pytest.mark.parametrize("direction", ["uni", "reverse", "bi"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_at_masked_step_does_not_leak(cell, direction, masked_output, dtype):
    B, T, I, H, L = 5, 9, 4, 17, 2
    bidirectional, reverse = direction == "bi", direction == "reverse"
    D = 2 if bidirectional else 1
    layer = cell(I, H, num_layers=L, bidirectional=bidirectional, reverse=reverse,
                 masked_output=masked_output, dtype=dtype, init="torch", seed=12)
    rng = np.random.default_rng(12)
    x = rng.normal(size=(B, T, I))
    s0 = make_state(cell, rng, (L * D, B, H))
    mask = rng.random((B, T)) < 0.6          # holes
    mask[0] = False                          # fully masked row
    mask[1] = True                           # full row
    mask[2, :3] = False                      # left padding
    mask[3, -3:] = False                     # right padding
    x_nan = x.copy()
    x_nan[~mask] = np.nan
    x_inf = x.copy()
    x_inf[~mask] = np.inf
    x_zero = x.copy()
    x_zero[~mask] = 0.0

    expected = layer(x_zero, mask=mask, initial_state=s0)
    for xb in (x_nan, x_inf):
        got = layer(xb, mask=mask, initial_state=s0)
        assert np.all(np.isfinite(got[0]))
        for s in states(cell, got[1]):
            assert np.all(np.isfinite(s))
        assert_same_result(cell, got, expected)

    # the same through lengths (right padding)
    lengths = np.array([0, T, 4, 1, T - 2])
    lmask = ref.lengths_to_mask(lengths, T)
    xl = x.copy()
    xl[~lmask] = np.nan
    got = layer(xl, lengths=lengths, initial_state=s0)
    assert np.all(np.isfinite(got[0]))
    xz = x.copy()
    xz[~lmask] = 0.0
    assert_same_result(cell, got, layer(xz, lengths=lengths, initial_state=s0))

    # and against the numpy reference
    r_out, r_st = ref.rnn_forward(layer._cell, layer.state_dict(), x_nan, hidden_size=H,
                                  num_layers=L, bidirectional=bidirectional, reverse=reverse,
                                  mask=mask, masked_output=masked_output, initial_state=s0)
    atol = 2e-5 if dtype == "float32" else 1e-10
    assert_allclose(expected[0], r_out, rtol=0, atol=atol)
    for s, r in zip(states(cell, expected[1]), states(cell, r_st)):
        assert_allclose(s, r, rtol=0, atol=atol)


def test_step_after_nan_padded_call(cell):
    """A state from a call whose padded (NaN) steps were masked streams on finitely in step()."""
    layer = cell(3, 6, seed=13)
    rng = np.random.default_rng(13)
    x = rng.normal(size=(2, 5, 3))
    x[:, 3:] = np.nan
    _, st = layer(x, lengths=[3, 2])
    y, st2 = layer.step(rng.normal(size=(2, 3)), st)
    assert np.all(np.isfinite(y))
    for s in states(cell, st2):
        assert np.all(np.isfinite(s))


# ----------------------------------------------------------------------------------------------
# Errors leave the layer usable


def test_layer_usable_after_errors(cell):
    layer = cell(3, 4, seed=14)
    x = np.random.default_rng(14).normal(size=(2, 5, 3)).astype(np.float32)
    expected = layer(x)
    for kwargs in ({"mask": np.ones((2, 4), bool)}, {"lengths": [9, 9]},
                   {"mask": np.full((2, 5), 2)}, {"initial_state": np.zeros((7, 2, 4))}):
        with pytest.raises((ValueError, TypeError)):
            layer(x, **kwargs)
    with pytest.raises(ValueError):
        layer(np.zeros((2, 5, 9)))
    assert_same_result(cell, layer(x), expected)
