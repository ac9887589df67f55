"""Parity of fastrnn.LSTM / fastrnn.GRU with real PyTorch (torch.nn.LSTM / torch.nn.GRU).

Weights are converted from the torch module into a fastrnn state_dict here in the test (not with
``fastrnn.from_torch``), so this file checks the kernels and the documented canonical weight
layout (docs/api.md, "Weights by gate name") independently of the loaders. The main checks run
under every kernel variant (ISA) the CPU supports.

Tolerances
----------
* float64: 1e-10 absolute. Both sides use exact libm-quality math in double.
* float32: 2e-5 absolute for short sequences (T <= ~12). fastrnn's float32 sigmoid / tanh are
  rational approximations with ~3e-7 max absolute error (torch uses libm-accurate float32 math),
  and the two sides round matmuls in different orders; over a few steps and up to 3 stacked layers
  the differences stay well below 2e-5. A separate long-sequence check (T=300, H=64) bounds the
  accumulated float32 error at 1e-4 against a float64 ground truth.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastrnn

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

try:  # tests/ may or may not be a package
    from . import reference as ref
except ImportError:
    import reference as ref

from fastrnn import _core  # noqa: E402

ATOL = {np.float32: 2e-5, np.float64: 1e-10}


def _isas():
    if hasattr(_core, "available_isas") and hasattr(_core, "set_isa"):
        return list(_core.available_isas())
    return [None]


@pytest.fixture(params=_isas())
def kernel_isa(request):
    """Run under every kernel variant (ISA) this CPU supports, restoring the default after."""
    if request.param is None:
        yield None
        return
    before = _core.get_isa()
    _core.set_isa(request.param)
    try:
        yield request.param
    finally:
        _core.set_isa(before)
LONG_ATOL_F32 = 1e-4

# torch's row-block order of weight_ih / weight_hh, mapped to fastrnn gate names.
TORCH_GATE_ORDER = {
    "lstm": ("input", "forget", "cell", "output"),        # torch [i, f, g, o]
    "gru": ("reset", "update", "candidate"),              # torch [r, z, n]
}


# ----------------------------------------------------------------------------------------------
# Helpers


def torch_to_fastrnn_state_dict(module, cell, dtype):
    """Convert an nn.LSTM / nn.GRU state into fastrnn's flat gate-named state_dict."""
    sd = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    H = module.hidden_size
    dirs = [("", "forward"), ("_reverse", "backward")] if module.bidirectional else \
        [("", "forward")]
    out = {}
    for k in range(module.num_layers):
        for sfx, dname in dirs:
            w_ih, w_hh = sd[f"weight_ih_l{k}{sfx}"], sd[f"weight_hh_l{k}{sfx}"]
            for gi, gate in enumerate(TORCH_GATE_ORDER[cell]):
                rows = slice(gi * H, (gi + 1) * H)
                key = f"layer{k}.{dname}.{gate}"
                out[key + ".kernel"] = np.ascontiguousarray(w_ih[rows].T, dtype=dtype)
                out[key + ".recurrent"] = np.ascontiguousarray(w_hh[rows].T, dtype=dtype)
                if module.bias:
                    b_ih = sd[f"bias_ih_l{k}{sfx}"][rows]
                    b_hh = sd[f"bias_hh_l{k}{sfx}"][rows]
                    if cell == "lstm":
                        # fastrnn sums LSTM biases; sum in the layer's dtype like torch's kernel.
                        out[key + ".bias"] = (b_ih + b_hh).astype(dtype)
                    else:
                        out[key + ".bias"] = b_ih.astype(dtype)
                        out[key + ".recurrent_bias"] = b_hh.astype(dtype)
    return out


def make_pair(cell, I, H, L, bidirectional, bias, dtype, seed=0, scale=None):
    """A torch module and an equal fastrnn layer (same weights)."""
    torch.manual_seed(seed)
    cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    mod = cls(I, H, num_layers=L, bidirectional=bidirectional, batch_first=True, bias=bias)
    if dtype == np.float64:
        mod = mod.double()
    if scale == "wide":
        # Wider than torch's U(-1/sqrt(H), 1/sqrt(H)) so the nonlinearities are exercised, but
        # shrinking with H: much wider random weights make the net chaotic, and then even torch
        # float32 vs torch float64 differs by more than the float32 tolerance.
        scale = min(0.9, 2.0 / np.sqrt(H))
    if scale is not None:
        with torch.no_grad():
            for prm in mod.parameters():
                prm.uniform_(-scale, scale)
    mod.eval()
    layer_cls = fastrnn.LSTM if cell == "lstm" else fastrnn.GRU
    layer = layer_cls(I, H, num_layers=L, bidirectional=bidirectional, use_bias=bias,
                      dtype=np.dtype(dtype).name)
    sd = torch_to_fastrnn_state_dict(mod, cell, dtype)
    layer.load_state_dict(sd)
    return mod, layer, sd


def rand_state(cell, rng, L, D, B, H, dtype):
    h0 = rng.normal(scale=0.5, size=(L * D, B, H)).astype(dtype)
    if cell == "lstm":
        c0 = rng.normal(scale=0.5, size=(L * D, B, H)).astype(dtype)
        return (h0, c0)
    return h0


def to_torch_state(cell, state):
    if state is None:
        return None
    if cell == "lstm":
        return tuple(torch.from_numpy(np.ascontiguousarray(s)) for s in state)
    return torch.from_numpy(np.ascontiguousarray(state))


def state_arrays(cell, state):
    """fastrnn / torch / reference state -> list of numpy arrays [h] or [h, c]."""
    if cell == "lstm":
        return [np.asarray(s.detach().numpy() if hasattr(s, "detach") else s) for s in state]
    return [np.asarray(state.detach().numpy() if hasattr(state, "detach") else state)]


def assert_states_close(cell, got, expected, atol):
    g, e = state_arrays(cell, got), state_arrays(cell, expected)
    assert len(g) == len(e)
    for name, ga, ea in zip("hc", g, e):
        assert ga.shape == ea.shape, f"{name}_n shape {ga.shape} != {ea.shape}"
        assert_allclose(ga, ea, rtol=0, atol=atol, err_msg=f"{name}_n")


def torch_run(mod, x, state=None, lengths=None):
    """Run the torch module; with lengths, through pack_padded_sequence(enforce_sorted=False)."""
    T = x.shape[1]
    xt = torch.from_numpy(np.ascontiguousarray(x))
    with torch.no_grad():
        if lengths is None:
            out, st = mod(xt, state)
        else:
            packed = pack_padded_sequence(xt, torch.from_numpy(np.asarray(lengths, np.int64)),
                                          batch_first=True, enforce_sorted=False)
            out_p, st = mod(packed, state)
            out, out_len = pad_packed_sequence(out_p, batch_first=True, total_length=T)
            np.testing.assert_array_equal(out_len.numpy(), lengths)
    return out.numpy(), st


def check_fastrnn_vs_torch(cell, mod, layer, x, dtype, state=None, lengths=None, atol=None):
    atol = ATOL[dtype] if atol is None else atol
    t_out, t_state = torch_run(mod, x, to_torch_state(cell, state), lengths)
    out, st = layer(x, initial_state=state, lengths=lengths)
    assert out.dtype == np.dtype(dtype)
    assert out.shape == t_out.shape
    assert_allclose(out, t_out, rtol=0, atol=atol, err_msg="output")
    assert_states_close(cell, st, t_state, atol)
    for a in state_arrays(cell, st):
        assert a.dtype == np.dtype(dtype)
    return out, st


def ragged_lengths(rng, B, T):
    """Unsorted lengths in [1, T] with at least one row of length T."""
    lengths = rng.integers(1, T + 1, size=B)
    lengths[rng.integers(B)] = T
    return lengths


# ----------------------------------------------------------------------------------------------
# Full configuration grid: cell x num_layers x bidirectional x bias x dtype

SHAPES = [  # (B, T, I, H)
    (3, 5, 4, 5),
    (1, 4, 3, 17),
    (4, 6, 7, 33),
    (2, 3, 5, 16),
    (5, 7, 2, 1),
]
DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_grid(cell, num_layers, bidirectional, bias, dtype, kernel_isa):
    # Spread the shapes over the grid deterministically instead of a full product.
    idx = (["lstm", "gru"].index(cell) + num_layers * 2 + 3 * bidirectional + bias
           + DTYPES.index(dtype)) % len(SHAPES)
    B, T, I, H = SHAPES[idx]
    D = 2 if bidirectional else 1
    seed = 1000 * idx + 10 * num_layers + 2 * bidirectional + bias
    mod, layer, _ = make_pair(cell, I, H, num_layers, bidirectional, bias, dtype, seed=seed,
                              scale="wide")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    s0 = rand_state(cell, rng, num_layers, D, B, H, dtype)

    check_fastrnn_vs_torch(cell, mod, layer, x, dtype)                        # zeros, full
    check_fastrnn_vs_torch(cell, mod, layer, x, dtype, state=s0)              # h0/c0, full
    lengths = ragged_lengths(rng, B, T)
    check_fastrnn_vs_torch(cell, mod, layer, x, dtype, lengths=lengths)       # ragged
    check_fastrnn_vs_torch(cell, mod, layer, x, dtype, state=s0, lengths=lengths)
    # lengths all == T must equal the unmasked run.
    full = np.full(B, T)
    check_fastrnn_vs_torch(cell, mod, layer, x, dtype, state=s0, lengths=full)


# ----------------------------------------------------------------------------------------------
# Edge shapes: B=1, H=1, T=1, H not a multiple of 16, larger I


EDGE_SHAPES = [  # (B, T, I, H)
    (1, 1, 1, 1),
    (1, 5, 3, 1),
    (4, 1, 3, 5),
    (1, 9, 6, 17),
    (3, 4, 10, 33),
    (2, 3, 40, 31),
    (6, 8, 8, 64),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=lambda s: "B{}T{}I{}H{}".format(*s))
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_edge_shapes(cell, shape, dtype, kernel_isa):
    B, T, I, H = shape
    L, bidirectional = 2, True
    mod, layer, _ = make_pair(cell, I, H, L, bidirectional, True, dtype, seed=H * 7 + T,
                              scale="wide")
    rng = np.random.default_rng(H + 100 * T)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    s0 = rand_state(cell, rng, L, 2, B, H, dtype)
    check_fastrnn_vs_torch(cell, mod, layer, x, dtype)
    check_fastrnn_vs_torch(cell, mod, layer, x, dtype, state=s0)
    check_fastrnn_vs_torch(cell, mod, layer, x, dtype, state=s0, lengths=ragged_lengths(rng, B, T))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_default_torch_init(cell, dtype):
    """Unmodified torch initialisation (no widening), unidirectional, 1 layer."""
    B, T, I, H = 3, 6, 5, 12
    mod, layer, _ = make_pair(cell, I, H, 1, False, True, dtype, seed=3)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    check_fastrnn_vs_torch(cell, mod, layer, x, dtype)
    check_fastrnn_vs_torch(cell, mod, layer, x, dtype, lengths=np.array([6, 2, 4]))


# ----------------------------------------------------------------------------------------------
# Saturated nonlinearities: huge pre-activations must give torch's limits, never NaN / inf


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_saturation(cell, dtype, kernel_isa):
    B, T, I, H = 3, 4, 3, 17
    mod, layer, _ = make_pair(cell, I, H, 2, True, True, dtype, seed=4, scale="wide")
    rng = np.random.default_rng(4)
    for big in (10.0, 1e3, 1e6, 1e20):
        x = (rng.normal(size=(B, T, I)) * big).astype(dtype)
        out, st = check_fastrnn_vs_torch(cell, mod, layer, x, dtype)
        assert np.all(np.isfinite(out))


# ----------------------------------------------------------------------------------------------
# Length-0 rows: torch rejects them, so check against the numpy reference (and torch on the rest)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_zero_length_rows(cell, bidirectional, dtype, kernel_isa):
    B, T, I, H, L = 5, 6, 4, 9, 2
    D = 2 if bidirectional else 1
    mod, layer, sd = make_pair(cell, I, H, L, bidirectional, True, dtype, seed=5, scale="wide")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    s0 = rand_state(cell, rng, L, D, B, H, dtype)
    lengths = np.array([3, 0, T, 1, 0])

    out, st = layer(x, initial_state=s0, lengths=lengths)
    r_out, r_st = ref.rnn_forward(cell, sd, x, hidden_size=H, num_layers=L,
                                  bidirectional=bidirectional, initial_state=s0,
                                  mask=ref.lengths_to_mask(lengths, T), masked_output="zero")
    atol = ATOL[dtype]
    assert_allclose(out, r_out, rtol=0, atol=atol)
    assert_states_close(cell, st, r_st, atol)

    # Length-0 rows: output all zero, state passes through exactly.
    zero = lengths == 0
    assert np.all(out[zero] == 0)
    for got, init in zip(state_arrays(cell, st), state_arrays(cell, s0)):
        np.testing.assert_array_equal(got[:, zero], init[:, zero])

    # The other rows agree with torch (run on the subset torch accepts).
    keep = ~zero
    s_keep = tuple(s[:, keep] for s in s0) if cell == "lstm" else s0[:, keep]
    t_out, t_st = torch_run(mod, x[keep], to_torch_state(cell, s_keep), lengths[keep])
    assert_allclose(out[keep], t_out, rtol=0, atol=atol)
    for got, t in zip(state_arrays(cell, st), state_arrays(cell, t_st)):
        assert_allclose(got[:, keep], t, rtol=0, atol=atol)


# ----------------------------------------------------------------------------------------------
# Long float32 sequence: accumulated error stays bounded


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_long_sequence_float32(cell, kernel_isa):
    B, T, I, H = 2, 300, 16, 64
    mod32, layer32, _ = make_pair(cell, I, H, 1, False, True, np.float32, seed=11)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    s0 = rand_state(cell, rng, 1, 1, B, H, np.float32)

    # Ground truth: torch in float64 with the very same (float32-representable) weights/inputs.
    mod64 = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H, batch_first=True).double()
    mod64.load_state_dict({k: v.double() for k, v in mod32.state_dict().items()})
    mod64.eval()
    s0_64 = tuple(s.astype(np.float64) for s in s0) if cell == "lstm" else s0.astype(np.float64)
    t_out64, t_st64 = torch_run(mod64, x.astype(np.float64), to_torch_state(cell, s0_64))
    t_out32, t_st32 = torch_run(mod32, x, to_torch_state(cell, s0))

    out, st = layer32(x, initial_state=s0)
    err = np.abs(out - t_out64).max()
    assert err < LONG_ATOL_F32, f"fastrnn float32 error vs float64 truth: {err:.3g}"
    assert_states_close(cell, st, t_st64, LONG_ATOL_F32)
    # and against torch's own float32 computation
    assert_allclose(out, t_out32, rtol=0, atol=LONG_ATOL_F32)
    assert_states_close(cell, st, t_st32, LONG_ATOL_F32)

    # ragged too
    lengths = np.array([T, 173])
    t_out64, t_st64 = torch_run(mod64, x.astype(np.float64), to_torch_state(cell, s0_64), lengths)
    out, st = layer32(x, initial_state=s0, lengths=lengths)
    assert np.abs(out - t_out64).max() < LONG_ATOL_F32
    assert_states_close(cell, st, t_st64, LONG_ATOL_F32)


# ----------------------------------------------------------------------------------------------
# step() streaming == full-sequence call == torch


@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "h0"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_step_streaming(cell, num_layers, dtype, with_state, kernel_isa):
    B, T, I, H = 3, 7, 5, 17
    mod, layer, _ = make_pair(cell, I, H, num_layers, False, True, dtype, seed=21 + num_layers,
                              scale="wide")
    rng = np.random.default_rng(21)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    s0 = rand_state(cell, rng, num_layers, 1, B, H, dtype) if with_state else None

    full_out, full_st = layer(x, initial_state=s0)
    t_out, t_st = torch_run(mod, x, to_torch_state(cell, s0))

    state = s0
    ys = []
    for t in range(T):
        y, state = layer.step(x[:, t], state)
        assert y.shape == (B, H) and y.dtype == np.dtype(dtype)
        ys.append(y.copy())
    stream = np.stack(ys, axis=1)

    tight = {np.float32: 1e-6, np.float64: 1e-13}[dtype]
    assert_allclose(stream, full_out, rtol=0, atol=tight)
    assert_states_close(cell, state, full_st, tight)
    assert_allclose(stream, t_out, rtol=0, atol=ATOL[dtype])
    assert_states_close(cell, state, t_st, ATOL[dtype])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_step_after_prefix(cell):
    """Full call on a prefix, then step() on the rest with the returned state == torch full run."""
    B, T, I, H, L = 2, 9, 4, 6, 2
    dtype = np.float64
    mod, layer, _ = make_pair(cell, I, H, L, False, True, dtype, seed=8, scale="wide")
    x = np.random.default_rng(8).normal(size=(B, T, I))
    t_out, t_st = torch_run(mod, x)
    out, state = layer(x[:, :4])
    ys = [out]
    for t in range(4, T):
        y, state = layer.step(x[:, t], state)
        ys.append(y[:, None])
    assert_allclose(np.concatenate(ys, axis=1), t_out, rtol=0, atol=1e-10)
    assert_states_close(cell, state, t_st, 1e-10)
