"""PyTorch loading and saving as a newcomer meets it: whole models handed to from_torch, LSTMCell /
GRUCell, a `torch.save(model)` file or a TorchScript archive instead of a state_dict, exports
that cannot hold a setting, every tensor of a model as numpy, and to_torch_module's range.

Every number is compared with real torch modules (packed sequences for lengths, the cells'
own forward for step()); float32 tolerance 1e-5 (1e-6 for whole sequences), float64 1e-12.
"""
import io
import json
import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastrnn
from fastrnn.io import torch as ftorch

B, T, I, H = 3, 6, 5, 4
ATOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}
STEP_ATOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _inputs(seed, dtype=np.float32, features=I):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, features)).astype(dtype)
    lengths = np.array([T, 2, 4])[rng.permutation(B)]  # unsorted on purpose
    return x, lengths


def _torch_run(torch, module, x, lengths):
    """Outputs (padded with zeros) and final h of a batch_first module on a packed batch."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    with torch.no_grad():
        packed = pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                      batch_first=True, enforce_sorted=False)
        out, state = module(packed)
        y = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0].numpy()
    h = (state[0] if isinstance(state, tuple) else state).numpy()
    return y, h


def _check_against_module(torch, layer, module, seed, features=I):
    """layer(x, lengths) against the torch module on packed sequences (batch_first or not)."""
    dtype = np.float64 if next(module.parameters()).dtype == torch.float64 else np.float32
    assert layer.dtype == dtype
    x, lengths = _inputs(seed, dtype, features)
    module = module.eval()
    if not module.batch_first:  # feed torch time-major, compare batch-major
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
        with torch.no_grad():
            packed = pack_padded_sequence(torch.from_numpy(x).transpose(0, 1),
                                          torch.from_numpy(lengths), enforce_sorted=False)
            out, state = module(packed)
            y_ref = pad_packed_sequence(out, total_length=T)[0].transpose(0, 1).numpy()
        h_ref = (state[0] if isinstance(state, tuple) else state).numpy()
    else:
        y_ref, h_ref = _torch_run(torch, module, x, lengths)
    y, state = layer(x, lengths=lengths)
    h = state[0] if isinstance(state, tuple) else state
    assert_allclose(y, y_ref, atol=ATOL[layer.dtype], rtol=0)
    assert_allclose(h, h_ref, atol=ATOL[layer.dtype], rtol=0)


def _model(torch, dtype=None):
    """Embedding -> bidirectional 2-layer LSTM -> (decoder: GRU, Linear): a model containing
    recurrent layers at two depths, plus non-recurrent weights around them."""
    torch.manual_seed(0)

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(2 * H, H, batch_first=True)
            self.head = torch.nn.Linear(H, 2)

    class Seq2Seq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(11, I)
            self.encoder = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True,
                                         batch_first=True)
            self.decoder = Decoder()

    model = Seq2Seq()
    return model.to(dtype) if dtype is not None else model


# ---- 1. any nn.Module --------------------------------------------------------------------------

@pytest.mark.parametrize("float64", [False, True])
def test_model_containing_lstm_and_gru(torch, float64):
    model = _model(torch, torch.float64 if float64 else None)
    layers = ftorch.from_torch(model)
    assert list(layers) == ["encoder", "decoder.gru"]  # named_modules() names, model order
    assert isinstance(layers["encoder"], fastrnn.LSTM) and layers["encoder"].bidirectional
    assert layers["encoder"].num_layers == 2 and layers["decoder.gru"].name == "decoder.gru"
    _check_against_module(torch, layers["encoder"], model.encoder, 1)
    _check_against_module(torch, layers["decoder.gru"], model.decoder.gru, 2, features=2 * H)
    # the same keys as the model's state_dict gives
    assert list(ftorch.from_torch(model.state_dict())) == list(layers)
    picked = ftorch.from_torch(model, name="decoder.gru")
    _check_against_module(torch, picked, model.decoder.gru, 3, features=2 * H)
    with pytest.raises(KeyError, match="decoder.gru"):
        ftorch.from_torch(model, name="decoder")


def test_reported_encoder_loads_through_fastrnn_from_torch(torch):
    """The reported case: Embedding + LSTM + Linear passed to fastrnn.from_torch."""
    torch.manual_seed(1)
    encoder = torch.nn.Sequential(torch.nn.Embedding(20, I), torch.nn.LSTM(I, H),
                                  torch.nn.Linear(H, 3))
    layer = fastrnn.from_torch(encoder)
    assert isinstance(layer, fastrnn.LSTM) and layer.name == "1"
    _check_against_module(torch, layer, encoder[1], 4)


def _script(torch, module):
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; users still have it
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module)


def test_scripted_and_traced_models(torch):
    model = _model(torch)
    scripted = _script(torch, torch.nn.ModuleDict({"rnn": model.encoder,
                                                    "fc": model.decoder.head}))
    layer = ftorch.from_torch(scripted)
    assert layer.name == "rnn"
    _check_against_module(torch, layer, model.encoder, 5)
    # a scripted class of the user's own named LSTM is not torch's
    class LSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(I))

        def forward(self, x):
            return x * self.scale

    mixed = _script(torch, torch.nn.ModuleDict({"mine": LSTM(), "gru": model.decoder.gru}))
    assert list(ftorch.layers_from_module(mixed)) == ["gru"]
    cell = torch.nn.GRUCell(I, H)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(cell, (torch.zeros(2, I), torch.zeros(2, H)))
    _check_cell_steps(torch, ftorch.from_torch(traced), cell, np.float32, 6)


def _check_cell_steps(torch, layer, cell, dtype, seed, steps=4):
    """layer.step against the cell's forward, step after step from a random state."""
    rng = np.random.default_rng(seed)
    lstm = isinstance(layer, fastrnn.LSTM)
    h = rng.normal(size=(B, H)).astype(dtype)
    c = rng.normal(size=(B, H)).astype(dtype)
    state = (h[None], c[None]) if lstm else h[None]
    ref = (torch.from_numpy(h), torch.from_numpy(c)) if lstm else torch.from_numpy(h)
    for _ in range(steps):
        x = rng.normal(size=(B, layer.input_size)).astype(dtype)
        y, state = layer.step(x, state)
        with torch.no_grad():
            ref = cell(torch.from_numpy(x), ref)
        h_ref = ref[0] if lstm else ref
        assert_allclose(y, h_ref.numpy(), atol=STEP_ATOL[np.dtype(dtype)], rtol=0)
        if lstm:
            assert_allclose(state[1][0], ref[1].numpy(), atol=STEP_ATOL[np.dtype(dtype)],
                            rtol=0)


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cells_step_like_torch(torch, kind, bias, dtype):
    torch.manual_seed(7)
    cell = getattr(torch.nn, kind)(I, H, bias=bias)
    cell = cell.to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():  # nonzero biases, different in bias_ih and bias_hh
        for p in cell.parameters():
            p.uniform_(-0.8, 0.8)
    layer = ftorch.from_torch(cell)
    assert layer.num_layers == 1 and not layer.bidirectional and layer.use_bias == bias
    assert layer.dtype == dtype and layer.hidden_size == H and layer.input_size == I
    _check_cell_steps(torch, layer, cell, dtype, 8)
    # a state_dict with a cell's keys under a prefix, and a module holding the cell
    prefixed = {f"decoder.cell.{k}": v for k, v in cell.state_dict().items()}
    from_sd = ftorch.from_torch(prefixed)
    assert from_sd.name == "decoder.cell"
    _check_cell_steps(torch, from_sd, cell, dtype, 9)
    holder = torch.nn.ModuleDict({"cell": cell, "out": torch.nn.Linear(H, 2)})
    _check_cell_steps(torch, ftorch.from_torch(holder), cell, dtype, 10)


def test_cell_state_dict_errors_name_the_cell_keys(torch):
    sd = {f"cell.{k}": v for k, v in torch.nn.LSTMCell(I, H).state_dict().items()}
    del sd["cell.bias_hh"]
    with pytest.raises(ValueError, match=r"missing tensor cell\.bias_hh\b"):
        ftorch.from_torch(sd)


@pytest.mark.parametrize("make", [
    lambda nn: nn.RNN(I, H), lambda nn: nn.RNNCell(I, H), lambda nn: nn.Linear(I, H),
    lambda nn: nn.Sequential(nn.Embedding(3, I), nn.RNN(I, H)),
    lambda nn: nn.Linear(I, H).weight.data, lambda nn: 5, lambda nn: [1, 2],
    lambda nn: np.zeros(3),
], ids=["RNN", "RNNCell", "Linear", "model-with-RNN", "tensor", "int", "list", "ndarray"])
def test_anything_else_is_a_type_error_listing_what_is_accepted(torch, make):
    source = make(torch.nn)
    for load in (ftorch.from_torch, fastrnn.from_torch):
        with pytest.raises(TypeError) as info:
            load(source)
        message = str(info.value)
        for accepted in ("nn.LSTM", "nn.GRU", "nn.LSTMCell", "nn.GRUCell", "a module containing",
                         "state_dict", ".pt", ".pth", ".safetensors"):
            assert accepted in message, (accepted, message)
    if isinstance(source, torch.nn.Module) and "RNN" in repr(source):
        assert "nn.RNN" in message and "not supported" in message


def test_training_checkpoint_with_optimizer_state(torch, tmp_path):
    """{"model": ..., "optimizer": ..., "epoch": ...}: the optimizer's integer keys are fine."""
    model = _model(torch)
    opt = torch.optim.Adam(model.parameters())
    model.encoder(torch.zeros(1, 2, I))[0].sum().backward()
    opt.step()
    checkpoint = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    layers = ftorch.from_torch(tmp_path / "ckpt.pt")
    assert list(layers) == ["model.encoder", "model.decoder.gru"]
    _check_against_module(torch, layers["model.encoder"], model.encoder, 11)


# ---- 2. files that are not a state_dict --------------------------------------------------------

def test_whole_pickled_module_file_says_what_to_do(torch, tmp_path):
    model = torch.nn.Sequential(torch.nn.Embedding(10, I), torch.nn.LSTM(I, H))
    path = tmp_path / "model.pt"
    torch.save(model, path)
    for load in (ftorch.from_torch, fastrnn.from_torch, fastrnn.load, ftorch.all_weights):
        with pytest.raises(ValueError) as info:
            load(path)
        message = str(info.value)
        assert "\x1b" not in message  # no terminal escape codes
        assert "whole pickled module" in message and "torch.save(model)" in message
        assert "weights-only" in message and "never unpickles code" in message
        assert "fastrnn.from_torch(model)" in message and "model.state_dict()" in message
        assert "torch.nn.modules.rnn.LSTM" in message
    # and what the message suggests works
    layer = fastrnn.from_torch(torch.load(path, weights_only=False))
    _check_against_module(torch, layer, model[1], 12)


class _Opaque:
    """A pickled object of a class torch's weights-only loader does not know."""


def test_other_pickled_objects_pass_torch_message_without_escape_codes(torch, tmp_path):
    path = tmp_path / "objects.pt"
    torch.save({"weight_ih_l0": _Opaque()}, path)
    with pytest.raises(ValueError) as info:
        ftorch.from_torch(path)
    message = str(info.value)
    assert "\x1b" not in message and "weights-only" in message
    assert "_Opaque" in message and "state_dict" in message
    assert "Weights only load failed" in message  # torch's own words, whole and plain
    assert "do those steps only if you trust the source of the checkpoint" in message


def test_torchscript_archive(torch, tmp_path):
    torch.manual_seed(2)
    module = torch.nn.GRU(I, H, batch_first=True)
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(_script(torch, module), path)
    for load in (ftorch.from_torch, fastrnn.load):
        with pytest.raises(ValueError, match=r"TorchScript archive \(torch.jit.save\).*"
                                             r"fastrnn.from_torch\(torch.jit.load\(path\)\)"):
            load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(path)
    _check_against_module(torch, fastrnn.from_torch(loaded), module, 13)


# ---- 3. exports keep or refuse -----------------------------------------------------------------

def _write(layer, fmt, path):
    {"pt": ftorch.save_pt, "safetensors": ftorch.save_safetensors}[fmt](layer, path)


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_carry_layer_export_warns_and_keeps_settings(torch, fmt, tmp_path):
    layer = fastrnn.LSTM(I, H, num_layers=2, masked_output="carry", name="encoder",
                         dropout=0.25, recurrent_dropout=0.125, init="torch", seed=3)
    path = tmp_path / f"carry.{fmt}"
    with pytest.warns(UserWarning, match="zeros at the padded steps") as record:
        _write(layer, fmt, path)
    assert record[0].filename == __file__  # points at the caller's line
    back = fastrnn.load(path)
    for attr in ("masked_output", "name", "dropout", "recurrent_dropout", "num_layers"):
        assert getattr(back, attr) == getattr(layer, attr), attr
    x, lengths = _inputs(14)
    y = layer(x, lengths=lengths)[0]
    assert_allclose(back(x, lengths=lengths)[0], y, rtol=0, atol=0)
    # torch reads the file into its own module: same outputs at valid steps, zeros after
    if fmt == "pt":
        state = torch.load(path, weights_only=True)
    else:
        from safetensors.torch import load_file
        state = load_file(path)
    module = torch.nn.LSTM(I, H, num_layers=2, batch_first=True)
    module.load_state_dict(state)
    y_torch, _ = _torch_run(torch, module, x, lengths)
    valid = np.arange(T)[None, :] < lengths[:, None]
    assert_allclose(y_torch[valid], y[valid], atol=1e-6, rtol=0)
    assert np.all(y_torch[~valid] == 0) and np.any(y[~valid] != 0)


def test_state_dict_export_round_trips_through_torch(torch, tmp_path):
    layer = fastrnn.GRU(I, H, masked_output="carry", name="g", init="torch", seed=4)
    with pytest.warns(UserWarning, match="carry"):
        sd = ftorch.to_state_dict(layer)
    assert sd._metadata[""]["fastrnn"]["masked_output"] == "carry"
    with pytest.warns(UserWarning, match="carry"):
        tensors = ftorch.to_torch(layer)
    module = torch.nn.GRU(I, H)
    module.load_state_dict(tensors)  # torch's loader takes the extra _metadata entry
    back = ftorch.from_torch(tensors)
    assert back.masked_output == "carry" and back.name == "g"
    # a plain dict copy has no metadata: the PyTorch meaning, zeros at padded steps
    assert ftorch.from_torch(dict(tensors)).masked_output == "zero"


def test_a_submodule_named_fastrnn_is_no_metadata(torch):
    """torch's own _metadata has an entry per module path: one named "fastrnn" is not ours."""
    model = torch.nn.ModuleDict({"fastrnn": torch.nn.LSTM(I, H, batch_first=True)})
    state = model.state_dict()
    assert "fastrnn" in state._metadata
    _check_against_module(torch, ftorch.from_torch(state), model["fastrnn"], 17)


def test_zero_layer_exports_without_warning(torch, tmp_path):
    layer = fastrnn.LSTM(I, H, init="torch", seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ftorch.save_pt(layer, tmp_path / "a.pt")
        ftorch.save_safetensors(layer, tmp_path / "a.safetensors")
        module = ftorch.to_torch_module(layer)
    assert fastrnn.load(tmp_path / "a.pt").masked_output == "zero"
    from safetensors import safe_open
    with safe_open(tmp_path / "a.safetensors", "pt") as f:  # the reference reader
        assert f.metadata()["fastrnn.masked_output"] == "zero"
        assert_allclose(f.get_tensor("weight_ih_l0").numpy(),
                        module.weight_ih_l0.detach().numpy(), rtol=0, atol=0)


@pytest.mark.parametrize("make,prop", [
    (lambda: fastrnn.LSTM(I, H, reverse=True), "reverse=True"),
    (lambda: fastrnn.GRU(I, H, reverse=True), "reverse=True"),
    (lambda: fastrnn.GRU(I, H, reset_after=False), "reset_after=False"),
    (lambda: fastrnn.LSTM(I, H, peepholes=True), "peepholes"),
    (lambda: fastrnn.GRU(I, H, clip=3.0), "clip"),
])
def test_unrepresentable_layers_are_refused_naming_a_format_that_keeps_them(make, prop,
                                                                             tmp_path):
    layer = make()
    exports = [lambda: ftorch.save_safetensors(layer, tmp_path / "x.safetensors"),
               lambda: ftorch.to_state_dict(layer)]
    if pytest.importorskip("torch"):
        exports += [lambda: ftorch.save_pt(layer, tmp_path / "x.pt"),
                    lambda: ftorch.to_torch_module(layer)]
    for export in exports:
        with pytest.raises(ValueError, match=re.escape(prop) + r".*\.npz or \.frnn"):
            export()
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.pt").exists()


def _safetensors_with_metadata(path, metadata):
    """A valid LSTM safetensors file with a chosen `__metadata__` (any JSON)."""
    rng = np.random.default_rng(0)
    arrays = {"weight_ih_l0": rng.normal(size=(4 * H, I)).astype(np.float32),
              "weight_hh_l0": rng.normal(size=(4 * H, H)).astype(np.float32)}
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for key, a in arrays.items():
        header[key] = {"dtype": "F32", "shape": list(a.shape),
                       "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    head = json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))
    return path


@pytest.mark.parametrize("metadata,match", [
    ({"fastrnn.version": "1", "fastrnn.masked_output": "sideways"}, "masked_output"),
    ({"fastrnn.version": "1", "fastrnn.dropout": "nan"}, "dropout"),
    ({"fastrnn.version": "1", "fastrnn.dropout": "1"}, "dropout"),
    ({"fastrnn.version": "1", "fastrnn.recurrent_dropout": "-0.5"}, "recurrent_dropout"),
    ({"fastrnn.version": "1", "fastrnn.dropout": "1e999"}, "dropout"),
    ({"fastrnn.version": "1", "fastrnn.name": "n" * 5000}, "name"),
    ({"fastrnn.version": "2", "fastrnn.masked_output": "zero"}, "version"),
    ({"fastrnn.masked_output": "carry"}, "version"),
    ({"fastrnn.version": "1", "fastrnn.reverse": "true"}, "reverse"),
    ({"fastrnn.version": "1", "fastrnn.masked_output": ["carry"]}, "strings"),
    ({"format": 7}, "strings"),
    (["not", "a", "map"], "strings"),
])
def test_hostile_safetensors_metadata(tmp_path, metadata, match):
    path = _safetensors_with_metadata(tmp_path / "m.safetensors", metadata)
    with pytest.raises(ValueError, match=match):
        fastrnn.load(path)


def test_safetensors_metadata_of_other_writers_is_ignored(tmp_path):
    path = _safetensors_with_metadata(tmp_path / "m.safetensors", {"format": "pt", "x": "y"})
    assert fastrnn.load(path).masked_output == "zero"


@pytest.mark.parametrize("entry,match", [
    ({"version": "1", "masked_output": 5}, "strings"),
    ("carry", "dict"),
    ({"version": "1", "name": "enc", "peepholes": "1"}, "peepholes"),
    ({"version": "1", "dropout": "0.5x"}, "dropout"),
])
def test_hostile_pt_metadata(torch, tmp_path, entry, match):
    state = torch.nn.LSTM(I, H).state_dict()
    state._metadata[""]["fastrnn"] = entry
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=match):
        fastrnn.load(tmp_path / "m.pt")


# ---- 4. every tensor ---------------------------------------------------------------------------

def test_all_weights_of_a_model_its_file_and_a_checkpoint(torch, tmp_path):
    model = _model(torch)
    model.norm = torch.nn.BatchNorm1d(H)  # buffers, one of them int64
    expected = {k: v.numpy() for k, v in model.state_dict().items()}
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    for source in (model, model.state_dict(), tmp_path / "sd.pt",
                   (tmp_path / "sd.pt").read_bytes()):
        weights = ftorch.all_weights(source)
        assert list(weights) == list(expected)
        for key, value in expected.items():
            assert weights[key].dtype == value.dtype and weights[key].shape == value.shape, key
            assert_allclose(weights[key], value, rtol=0, atol=0)
    assert ftorch.all_weights(model)["norm.num_batches_tracked"].dtype == np.int64
    checkpoint = {"model": model.state_dict(), "epoch": 2, "note": "x"}
    weights = ftorch.all_weights(checkpoint)
    assert set(weights) == {f"model.{k}" for k in expected}


def test_all_weights_widens_half_precision_to_float32(torch, tmp_path):
    model = _model(torch)
    half = {"bf16": model.to(torch.bfloat16).state_dict(),
            "f16": {k: v.float().to(torch.float16) for k, v in model.state_dict().items()}}
    from safetensors.torch import save_file
    for kind, state in half.items():
        expected = {k: v.float().numpy() for k, v in state.items()}
        save_file(state, tmp_path / f"{kind}.safetensors")
        for source in (state, tmp_path / f"{kind}.safetensors"):
            weights = ftorch.all_weights(source)
            assert sorted(weights) == sorted(expected)  # safetensors sorts its entries
            for key, value in expected.items():
                assert weights[key].dtype == np.float32, key
                assert_allclose(weights[key], value, rtol=0, atol=0)
    # and a bfloat16 model loads as float32 layers
    _check_against_module(torch, ftorch.from_torch(model.to(torch.bfloat16))["encoder"],
                          model.encoder.float(), 15)


def test_all_weights_refuses_other_things(torch):
    with pytest.raises(TypeError, match="state_dict"):
        ftorch.all_weights(3)


# ---- 5. to_torch_module ------------------------------------------------------------------------

@pytest.mark.parametrize("cell,layers,bi,bias,dtype,proj", [
    ("LSTM", 3, False, True, "float32", 0),
    ("LSTM", 2, True, False, "float64", 0),
    ("GRU", 2, True, True, "float64", 0),
    ("GRU", 1, False, False, "float32", 0),
    ("LSTM", 2, True, True, "float64", 2),
    ("LSTM", 1, False, False, "float32", 3),
])
def test_to_torch_module(torch, cell, layers, bi, bias, dtype, proj):
    kw = {"proj_size": proj} if proj else {}
    layer = getattr(fastrnn, cell)(I, H, num_layers=layers, bidirectional=bi, use_bias=bias,
                                   dtype=dtype, init="torch", seed=layers, **kw)
    if bias:  # nonzero biases everywhere
        layer.load_state_dict({k: np.random.default_rng(1).uniform(-0.5, 0.5, v.shape)
                               if k.endswith("bias") else v
                               for k, v in layer.state_dict().items()})
    module = ftorch.to_torch_module(layer)
    assert isinstance(module, getattr(torch.nn, cell)) and module.batch_first
    assert module.num_layers == layers and module.bidirectional == bi and module.bias == bias
    assert module.proj_size == proj if cell == "LSTM" else True
    assert not module.training
    _check_against_module(torch, layer, module, 16)
