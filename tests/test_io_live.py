"""Live round trips with the real frameworks (torch, Keras 3 on the torch backend, onnxruntime):
framework -> fastrnn and fastrnn -> framework, on random configurations, each compared with the
framework's own output under its own masking semantics (torch packed sequences, Keras masks,
ONNX sequence_lens). float32 tolerance 1e-6 (T <= 6); float64 1e-12.
"""
import io
import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastrnn
from fastrnn.io import cudnn

ATOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}
B, T, I, H = 3, 6, 3, 4


def _inputs(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    lengths = np.array([T, 2, 4])[rng.permutation(B)]  # unsorted on purpose
    return x, lengths


# ---- torch ---------------------------------------------------------------------------------

TORCH_CONFIGS = list(itertools.product(["LSTM", "GRU"], [1, 2], [False, True], [True, False]))


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _torch_run(torch, module, x, lengths):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    with torch.no_grad():
        packed = pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                      batch_first=True, enforce_sorted=False)
        out, state = module(packed)
        y = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0].numpy()
    h = (state[0] if isinstance(state, tuple) else state).numpy()
    return y, h


@pytest.mark.parametrize("cell,layers,bi,bias", TORCH_CONFIGS)
def test_torch_to_fastrnn(torch, cell, layers, bi, bias):
    torch.manual_seed(layers * 10 + bi)
    dtype = np.float64 if layers == 2 and bias else np.float32
    module = getattr(torch.nn, cell)(I, H, num_layers=layers, bidirectional=bi, bias=bias,
                                     batch_first=True)
    module = module.to(torch.float64 if dtype == np.float64 else torch.float32).eval()
    x, lengths = _inputs(layers + 2 * bi, dtype)
    y_ref, h_ref = _torch_run(torch, module, x, lengths)
    sources = [module, {k: v.numpy() for k, v in module.state_dict().items()}]
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    sources.append(buf.getvalue())
    for src in sources:
        layer = fastrnn.from_torch(src)
        assert layer.dtype == dtype and layer.num_layers == layers and layer.use_bias == bias
        y, state = layer(x, lengths=lengths)
        h = state[0] if cell == "LSTM" else state
        assert_allclose(y, y_ref, atol=ATOL[layer.dtype], rtol=0)
        assert_allclose(h, h_ref, atol=ATOL[layer.dtype], rtol=0)


@pytest.mark.parametrize("cell,layers,bi,bias", TORCH_CONFIGS[::3])
def test_fastrnn_to_torch(torch, cell, layers, bi, bias):
    layer = getattr(fastrnn, cell)(I, H, num_layers=layers, bidirectional=bi, use_bias=bias,
                                   init="torch", seed=5)
    x, lengths = _inputs(7)
    module = fastrnn.io.torch.to_torch_module(layer)
    assert module.batch_first
    y_ref, h_ref = _torch_run(torch, module, x, lengths)
    y, state = layer(x, lengths=lengths)
    assert_allclose(y, y_ref, atol=1e-6, rtol=0)
    # the plain state_dict loads into a fresh module too
    fresh = getattr(torch.nn, cell)(I, H, num_layers=layers, bidirectional=bi, bias=bias,
                                    batch_first=True)
    fresh.load_state_dict(layer.to_torch_state_dict())
    assert_allclose(_torch_run(torch, fresh, x, lengths)[0], y, atol=1e-6, rtol=0)


def test_torch_unrepresentable(torch):
    with pytest.raises(ValueError, match="reset_after=False"):
        fastrnn.io.torch.to_torch_module(fastrnn.GRU(I, H, reset_after=False))
    with pytest.raises(ValueError, match="reverse=True"):
        fastrnn.GRU(I, H, reverse=True).to_torch_state_dict()
    with pytest.raises(ValueError, match="peepholes"):
        fastrnn.LSTM(I, H, peepholes=True).to_torch_state_dict()
    # nn.LSTM(proj_size) is representable now (tests/test_projection.py checks the numbers)
    assert fastrnn.from_torch(torch.nn.LSTM(I, H, proj_size=2)).proj_size == 2
    assert fastrnn.from_torch(torch.nn.LSTM(I, H, proj_size=2).state_dict()).proj_size == 2


@pytest.mark.parametrize("cell,bi", [("LSTM", True), ("GRU", False), ("GRU", True)])
def test_cudnn_canonical_against_torch(torch, cell, bi):
    """Build cuDNN canonical params from torch's weights by the documented layout (per
    pseudo-layer: W_0..W_{G-1}, R_0..R_{G-1}; then all biases b_W.., b_R..) and compare."""
    torch.manual_seed(3)
    module = getattr(torch.nn, cell)(I, H, num_layers=2, bidirectional=bi,
                                     batch_first=True).eval()
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    G = 4 if cell == "LSTM" else 3
    weights, biases = [], []
    for k in range(2):
        for sfx in (["", "_reverse"] if bi else [""]):
            w_ih, w_hh = sd[f"weight_ih_l{k}{sfx}"], sd[f"weight_hh_l{k}{sfx}"]
            weights += [w_ih[g * H:(g + 1) * H] for g in range(G)]
            weights += [w_hh[g * H:(g + 1) * H] for g in range(G)]
            biases += [sd[f"bias_ih_l{k}{sfx}"][g * H:(g + 1) * H] for g in range(G)]
            biases += [sd[f"bias_hh_l{k}{sfx}"][g * H:(g + 1) * H] for g in range(G)]
    flat = np.concatenate([w.ravel() for w in weights] + biases)
    x, lengths = _inputs(11)
    y_ref, _ = _torch_run(torch, module, x, lengths)
    kw = dict(cell=cell.lower(), input_size=I, hidden_size=H, num_layers=2, bidirectional=bi)
    for layer in (cudnn.from_cudnn(flat, **kw),
                  cudnn.from_cudnn(weights=weights, biases=biases, **kw)):
        assert_allclose(layer(x, lengths=lengths)[0], y_ref, atol=1e-6, rtol=0)
    back = cudnn.to_cudnn(cudnn.from_cudnn(flat, **kw), flat=True)
    n_w = sum(w.size for w in weights)
    # weights come back exactly; LSTM biases only as their sum (b_W = sum, b_R = 0)
    assert_allclose(back[:n_w] if cell == "LSTM" else back, flat[:n_w] if cell == "LSTM"
                    else flat, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs"):
        cudnn.from_cudnn(flat[:-1], **kw)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_keras2_cudnn_layout_against_torch(torch, cell):
    """Keras-2 CuDNNLSTM/CuDNNGRU storage built from torch weights by the documented layout:
    each (I, H) kernel block holds cuDNN's row-major (H, I) matrix poured in, each (H, H)
    recurrent block holds cuDNN's R itself (Keras' matrix transposed; tf_keras' converter applies
    `k.T` per block), bias = [b_W, b_R], Keras gate order (LSTM i,f,c,o; GRU z,r,h)."""
    from fastrnn.io.keras import layer_from_config
    torch.manual_seed(4)
    module = getattr(torch.nn, cell)(I, H, batch_first=True).eval()
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    torch_blocks = [0, 1, 2, 3] if cell == "LSTM" else [1, 0, 2]  # keras order -> torch block
    blk = lambda a, g: a[g * H:(g + 1) * H]  # noqa: E731
    kernel = np.concatenate([blk(sd["weight_ih_l0"], g).reshape(I, H) for g in torch_blocks], 1)
    rec = np.concatenate([blk(sd["weight_hh_l0"], g) for g in torch_blocks], 1)
    bias = np.concatenate([blk(sd["bias_ih_l0"], g) for g in torch_blocks]
                          + [blk(sd["bias_hh_l0"], g) for g in torch_blocks])
    layer = layer_from_config(f"CuDNN{cell}", {"name": "c"}, [kernel, rec, bias])
    x, lengths = _inputs(12)
    assert_allclose(layer(x, lengths=lengths)[0], _torch_run(torch, module, x, lengths)[0],
                    atol=1e-6, rtol=0)


# ---- Keras 3 (torch backend) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


KERAS_CONFIGS = [
    ("LSTM", dict()), ("LSTM", dict(go_backwards=True, use_bias=False)),
    ("GRU", dict(reset_after=True)), ("GRU", dict(reset_after=False, go_backwards=True)),
    ("BiLSTM", dict()), ("BiGRU", dict(reset_after=False)),
]


def _keras_layer(keras, kind, kw, seed):
    rng = np.random.default_rng(seed)
    base = getattr(keras.layers, kind.replace("Bi", ""))(H, return_sequences=True, **kw)
    layer = keras.layers.Bidirectional(base) if kind.startswith("Bi") else base
    layer.build((None, T, I))
    layer.set_weights([rng.uniform(-0.7, 0.7, tuple(w.shape)).astype(np.float32)
                       for w in layer.weights])
    return layer


def _keras_mask():
    return np.array([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1]], bool)


def _keras_out(layer, x, mask):
    y = layer(x, mask=mask)
    return np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)


@pytest.mark.parametrize("kind,kw", KERAS_CONFIGS)
def test_keras_to_fastrnn(keras, kind, kw):
    layer = _keras_layer(keras, kind, kw, seed=len(kind) + len(kw))
    x, _ = _inputs(13)
    mask = _keras_mask()
    ours = fastrnn.from_keras(layer)
    y, _ = ours(x, mask=mask)
    if ours.reverse:
        y = y[:, ::-1]
    assert_allclose(y, _keras_out(layer, x, mask), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind,kw", KERAS_CONFIGS[::2] + [KERAS_CONFIGS[3]])
def test_fastrnn_to_keras(keras, kind, kw):
    cls = fastrnn.LSTM if "LSTM" in kind else fastrnn.GRU
    extra = {"reset_after": kw["reset_after"]} if "reset_after" in kw else {}
    ours = cls(I, H, bidirectional=kind.startswith("Bi"), reverse=kw.get("go_backwards", False),
               masked_output="zero" if kind.startswith("Bi") else "carry", init="torch",
               seed=9, **extra)
    target = _keras_layer(keras, kind, kw, seed=0)
    target.set_weights(ours.to_keras())
    x, _ = _inputs(14)
    mask = _keras_mask()
    y, _ = ours(x, mask=mask)
    if ours.reverse:
        y = y[:, ::-1]
    assert_allclose(y, _keras_out(target, x, mask), atol=1e-6, rtol=0)


def test_keras_unsupported_activation(keras):
    """hard_sigmoid, relu & co. load now (tests/test_variants_io.py); others are refused."""
    layer = keras.layers.LSTM(H, recurrent_activation="gelu")
    layer.build((None, T, I))
    with pytest.raises(ValueError, match="recurrent_activation='gelu'"):
        fastrnn.from_keras(layer)


# ---- ONNX Runtime --------------------------------------------------------------------------

ONNX_CONFIGS = [("LSTM", dict()), ("LSTM", dict(num_layers=2, bidirectional=True)),
                ("LSTM", dict(reverse=True)), ("GRU", dict(reset_after=False, num_layers=2)),
                ("GRU", dict(bidirectional=True)), ("GRU", dict(reverse=True, use_bias=False))]


@pytest.mark.parametrize("cell,kw", ONNX_CONFIGS)
def test_fastrnn_to_onnxruntime_and_back(cell, kw, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from fastrnn.io.onnx import to_onnx_model
    layer = getattr(fastrnn, cell)(I, H, init="torch", seed=21, **kw)
    x, lengths = _inputs(15)
    rng = np.random.default_rng(0)
    D = layer.num_layers * layer.num_directions
    h0 = rng.normal(size=(D, B, H)).astype(np.float32)
    c0 = rng.normal(size=(D, B, H)).astype(np.float32)
    state0 = (h0, c0) if cell == "LSTM" else h0
    y, state = layer(x, lengths=lengths, initial_state=state0)
    model = to_onnx_model(layer, sequence_lens=True, initial_state=True)
    feed = {"X": x.transpose(1, 0, 2), "sequence_lens": lengths.astype(np.int32),
            "initial_h": h0}
    if cell == "LSTM":
        feed["initial_c"] = c0
    out = ort.InferenceSession(model.SerializeToString()).run(None, feed)
    assert_allclose(out[0].transpose(1, 0, 2), y, atol=1e-6, rtol=0)
    assert_allclose(out[1], state[0] if cell == "LSTM" else state, atol=1e-6, rtol=0)
    # and back: the file loads into layers with the same outputs
    path = tmp_path / "m.onnx"
    layer.to_onnx(path)
    back = fastrnn.load(path)
    chain = back.values() if isinstance(back, dict) else [back]
    z = x
    for part in chain:
        z = part(z, lengths=lengths)[0]
    assert_allclose(z, layer(x, lengths=lengths)[0], atol=1e-6, rtol=0)


def test_onnx_carry_layer_with_sequence_lens_warns():
    pytest.importorskip("onnx")
    from fastrnn.io.onnx import to_onnx_model
    with pytest.warns(UserWarning, match="outputs zeros in Y"):
        to_onnx_model(fastrnn.LSTM(I, H, masked_output="carry"), sequence_lens=True)


# ---- fastrnn's own formats -----------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_own_and_safetensors_round_trip(fmt, tmp_path):
    layer = fastrnn.GRU(I, H, num_layers=2, bidirectional=True, reset_after=True,
                        masked_output="zero", dtype="float64", seed=3, name="g")
    path = tmp_path / f"g.{fmt}"
    layer.save(path)
    back = fastrnn.load(path)
    x, lengths = _inputs(16)
    assert back.dtype == np.float64 and back.num_layers == 2 and back.bidirectional
    assert_allclose(back(x, lengths=lengths)[0], layer(x, lengths=lengths)[0], rtol=0, atol=0)
    if fmt == "npz":
        assert back.name == "g" and repr(back) == repr(layer)


def test_npz_keeps_every_option(tmp_path):
    layer = fastrnn.GRU(I, H, reset_after=False, reverse=True, use_bias=False,
                        masked_output="carry", dropout=0.25, seed=1)
    layer.save(tmp_path / "a.npz")
    back = fastrnn.load(tmp_path / "a.npz")
    for attr in ("reset_after", "reverse", "use_bias", "masked_output", "dropout", "dtype"):
        assert getattr(back, attr) == getattr(layer, attr), attr
    x, _ = _inputs(17)
    mask = _keras_mask()
    assert_allclose(back(x, mask=mask)[0], layer(x, mask=mask)[0], rtol=0, atol=0)


def test_frnn_through_save_load_and_convert(torch, tmp_path):
    """The flat embedded format through the generic entry points: save(format="frnn"),
    load() detecting it from the content (any extension), and `convert` from a torch file."""
    layer = fastrnn.GRU(I, H, num_layers=2, seed=3)
    layer.save(tmp_path / "a.bin", format="frnn")
    assert (tmp_path / "a.bin").read_bytes()[:4] == b"FRNN"
    back = fastrnn.load(tmp_path / "a.bin")
    x, _ = _inputs(5)
    assert_allclose(back(x)[0], layer(x)[0], rtol=0, atol=0)
    mod = torch.nn.LSTM(I, H, batch_first=True)
    torch.save(mod.state_dict(), tmp_path / "m.pt")
    fastrnn.io.convert(tmp_path / "m.pt", tmp_path / "m.frnn", format="frnn")
    conv = fastrnn.load(tmp_path / "m.frnn")
    with torch.no_grad():
        want = mod(torch.from_numpy(x))[0].numpy()
    assert_allclose(conv(x)[0], want, atol=1e-6)


def test_tf1_cudnn_compatible_gru_layout_against_torch(torch, tmp_path):
    """CudnnCompatibleGRUCell checkpoint variables built from torch GRU weights by the documented
    layout (gates/kernel [reset | update] over [x, h] with summed biases; candidate input and
    hidden projections, the hidden bias inside the reset product), compared with torch."""
    from tf_checkpoint_writer import write_checkpoint
    torch.manual_seed(6)
    module = torch.nn.GRU(I, H, batch_first=True).eval()
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    blk = lambda a, g: a[g * H:(g + 1) * H]  # noqa: E731  torch blocks r=0, z=1, n=2
    w_ih, w_hh, b_ih, b_hh = (sd[k] for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                              "bias_hh_l0"))
    root = "enc/rnn/cudnn_compatible_gru_cell"
    gates = np.concatenate([np.concatenate([blk(w_ih, g).T, blk(w_hh, g).T]) for g in (0, 1)], 1)
    write_checkpoint(str(tmp_path / "g.ckpt"), {
        f"{root}/gates/kernel": gates,
        f"{root}/gates/bias": np.concatenate([blk(b_ih, g) + blk(b_hh, g) for g in (0, 1)]),
        f"{root}/candidate/input_projection/kernel": blk(w_ih, 2).T.copy(),
        f"{root}/candidate/input_projection/bias": blk(b_ih, 2),
        f"{root}/candidate/hidden_projection/kernel": blk(w_hh, 2).T.copy(),
        f"{root}/candidate/hidden_projection/bias": blk(b_hh, 2),
    })
    layer = fastrnn.from_tf_checkpoint(str(tmp_path / "g.ckpt"))
    assert layer.name == "enc/rnn" and layer.reset_after
    x, lengths = _inputs(18)
    assert_allclose(layer(x, lengths=lengths)[0], _torch_run(torch, module, x, lengths)[0],
                    atol=1e-6, rtol=0)


def test_keras_model_object_by_user_names(keras):
    model = keras.Sequential([keras.Input((T, I)), keras.layers.Masking(0.0),
                              keras.layers.LSTM(H, return_sequences=True, name="enc"),
                              keras.layers.Dense(2, name="proj"),
                              keras.layers.Bidirectional(keras.layers.GRU(H), name="dec")])
    layers = fastrnn.load_all(model)
    assert list(layers) == ["enc", "dec"]
    assert layers["enc"].masked_output == "carry" and layers["dec"].masked_output == "zero"
    assert fastrnn.from_keras(model, name="dec").bidirectional
    with pytest.raises(KeyError, match="no recurrent layer named 'nope'"):
        fastrnn.from_keras(model, name="nope")
