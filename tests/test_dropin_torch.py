"""fastrnn.torch: drop-in nn.LSTM / nn.GRU modules, checked against PyTorch's own modules.

The reference is always a stock nn.LSTM / nn.GRU holding the same parameters (loaded through
`load_state_dict`, which also checks the interchange of state dicts). Tolerances are relative
to the largest magnitude of the reference: float64 1e-10; float32 1e-5 for outputs and 1e-4
for gradients (sums over B*T rows in another order than ATen, rational activations).
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastrnn.torch as ft  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

STOCK = {"lstm": nn.LSTM, "gru": nn.GRU}
FAST = {"lstm": ft.LSTM, "gru": ft.GRU}
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 1e-4)}


def close(actual, expected, tol, what):
    expected = expected.detach().double()
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    err = float((actual.detach().double() - expected).abs().max()) if expected.numel() else 0.0
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert err <= tol * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


def make_pair(cell, dtype=torch.float64, seed=0, **config):
    """A fastrnn.torch module with PyTorch's init and a stock module loaded from it."""
    torch.manual_seed(seed)
    fast = FAST[cell](dtype=dtype, **config)
    stock = STOCK[cell](dtype=dtype, **config)
    stock.load_state_dict(fast.state_dict())
    return fast, stock


def run(module, x, hx, lengths, batch_first):
    """Output as a padded tensor plus the final state, for padded or packed input."""
    if lengths is None:
        return module(x, hx)
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                  enforce_sorted=False)
    out, state = module(packed, hx)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    assert torch.equal(out.batch_sizes, packed.batch_sizes)
    assert torch.equal(out.unsorted_indices, packed.unsorted_indices)
    T = x.shape[1 if batch_first else 0]
    return pad_packed_sequence(out, batch_first=batch_first, total_length=T)[0], state


def states(state):
    return list(state) if isinstance(state, tuple) else [state]


def forward_backward(module, x, hx, lengths, batch_first, weights):
    """Outputs and the gradients of a random linear function of every output."""
    x = x.clone().requires_grad_(True)
    hx = None if hx is None else tuple(s.clone().requires_grad_(True) for s in hx)
    hx_arg = None if hx is None else (hx if isinstance(module, nn.LSTM) else hx[0])
    module.zero_grad()
    out, state = run(module, x, hx_arg, lengths, batch_first)
    results = [out, *states(state)]
    loss = sum((r * w).sum() for r, w in zip(results, weights))
    loss.backward()
    grads = [x.grad] + ([] if hx is None else [s.grad for s in hx])
    grads += [p.grad for p in module.parameters()]
    return results, grads


CASES = [
    # cell, config, B, T, lengths, hx given, unbatched
    ("lstm", dict(num_layers=1), 3, 6, None, False, False),
    ("lstm", dict(num_layers=2, bidirectional=True), 4, 5, [5, 2, 4, 1], True, False),
    ("lstm", dict(num_layers=2, bias=False, batch_first=True), 3, 4, None, True, False),
    ("lstm", dict(proj_size=3, bidirectional=True, batch_first=True), 4, 5, [1, 5, 3, 5],
     True, False),
    ("lstm", dict(num_layers=2, proj_size=2), 3, 4, None, False, False),
    ("lstm", dict(batch_first=True), 1, 5, None, True, True),
    ("gru", dict(num_layers=1, batch_first=True), 3, 6, None, False, False),
    ("gru", dict(num_layers=2, bidirectional=True, batch_first=True), 4, 5, [5, 2, 4, 1],
     True, False),
    ("gru", dict(bias=False, bidirectional=True), 3, 4, [4, 4, 2], False, False),
    ("gru", dict(num_layers=2), 1, 5, None, True, True),
]


# PyTorch itself warns that oneDNN has no projections (float32) and uses another kernel.
@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-len{c[4] is not None}"
                         f"-hx{int(c[5])}-unbatched{int(c[6])}")
def test_outputs_states_and_gradients_match_pytorch(case, dtype):
    cell, config, B, T, lengths, with_hx, unbatched = case
    I, H = 4, 5
    fast, stock = make_pair(cell, dtype, input_size=I, hidden_size=H, **config)
    batch_first = config.get("batch_first", False)
    D = 2 if config.get("bidirectional") else 1
    L = config.get("num_layers", 1)
    P = config.get("proj_size", 0) or H
    gen = torch.Generator().manual_seed(1)
    shape = (B, T, I) if batch_first else (T, B, I)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    hx = None
    if with_hx:
        hx = (torch.randn(L * D, B, P, generator=gen, dtype=dtype),
              torch.randn(L * D, B, H, generator=gen, dtype=dtype))[:2 if cell == "lstm" else 1]
    if unbatched:
        x = x.squeeze(0 if batch_first else 1)
        hx = None if hx is None else tuple(s.squeeze(1) for s in hx)
    with torch.no_grad():
        ref_results = [r for r in [run(stock, x, None if hx is None else (
            hx if cell == "lstm" else hx[0]), lengths, batch_first)]][0]
    weights = [torch.randn(r.shape, generator=gen, dtype=dtype)
               for r in [ref_results[0], *states(ref_results[1])]]
    expected, expected_grads = forward_backward(stock, x, hx, lengths, batch_first, weights)
    actual, actual_grads = forward_backward(fast, x, hx, lengths, batch_first, weights)
    out_tol, grad_tol = TOL[dtype]
    for name, a, e in zip(["output", "h_n", "c_n"], actual, expected):
        assert a.dtype == dtype
        close(a, e, out_tol, name)
    names = ["x"] + (["h0", "c0"][:len(hx)] if hx else []) + [n for n, _ in
                                                              fast.named_parameters()]
    assert len(actual_grads) == len(expected_grads) == len(names)
    for name, a, e in zip(names, actual_grads, expected_grads):
        close(a, e, grad_tol, f"grad {name}")


def test_eval_and_no_grad_paths_match_and_record_nothing(monkeypatch):
    fast, stock = make_pair("lstm", input_size=3, hidden_size=4, num_layers=2,
                            bidirectional=True, batch_first=True)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    recorded = []
    original = ft._layers._Recurrent._forward_with_tape
    monkeypatch.setattr(ft._layers._Recurrent, "_forward_with_tape",
                        lambda self, *a, **k: recorded.append(1) or original(self, *a, **k))
    expected = stock(x)[0]
    with torch.no_grad():
        out_no_grad = fast(x)[0]
    with torch.inference_mode():
        out_inference = fast(x)[0]
    fast.eval()
    out_eval = fast(x)[0]  # parameters require grad: recorded, and differentiable
    assert recorded == [1, 1]  # one record per stacked layer, for the grad-mode call only
    assert out_no_grad.grad_fn is None and out_eval.grad_fn is not None
    for out in (out_no_grad, out_inference, out_eval):
        close(out, expected, 1e-10, "output")


def test_state_dicts_interchange_both_ways(tmp_path):
    torch.manual_seed(0)
    stock = nn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    fast = ft.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    assert list(fast.state_dict()) == list(stock.state_dict())
    assert [v.shape for v in fast.state_dict().values()] == \
        [v.shape for v in stock.state_dict().values()]
    torch.save(stock.state_dict(), tmp_path / "stock.pt")
    fast.load_state_dict(torch.load(tmp_path / "stock.pt", weights_only=True))
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    close(fast(x)[0], stock(x)[0], 1e-10, "fast loaded from a stock checkpoint")
    torch.manual_seed(1)
    gru_fast = ft.GRU(3, 4, bias=False)
    gru_stock = nn.GRU(3, 4, bias=False)
    gru_stock.load_state_dict(gru_fast.state_dict())
    x = torch.randn(5, 2, 3)
    close(gru_stock(x)[0], gru_fast(x)[0], 1e-5, "stock loaded from a fast module")


def test_initialisation_is_pytorchs():
    torch.manual_seed(3)
    stock = nn.GRU(5, 7, num_layers=2)
    torch.manual_seed(3)
    fast = ft.GRU(5, 7, num_layers=2)
    for (name, a), (_, b) in zip(fast.named_parameters(), stock.named_parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("cell, config, lengths", [
    ("lstm", dict(num_layers=2, bidirectional=True), [3, 1, 2]),
    ("lstm", dict(proj_size=2, batch_first=True), None),
    ("gru", dict(num_layers=2, bidirectional=True, batch_first=True), [2, 3, 3]),
    ("gru", dict(), None),
])
def test_gradcheck_float64(cell, config, lengths):
    fast = FAST[cell](2, 3, dtype=torch.float64, **config)
    names = [n for n, _ in fast.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in fast.parameters()]
    batch_first = config.get("batch_first", False)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((3, 3, 2), generator=gen, dtype=torch.float64, requires_grad=True)
    D = 2 if config.get("bidirectional") else 1
    n = config.get("num_layers", 1) * D
    h0 = torch.randn((n, 3, config.get("proj_size", 0) or 3), generator=gen,
                     dtype=torch.float64, requires_grad=True)
    c0 = torch.randn((n, 3, 3), generator=gen, dtype=torch.float64, requires_grad=True)

    def function(x, h0, c0, *params):
        hx = (h0, c0) if cell == "lstm" else h0
        # gradcheck perturbs its inputs through .data, which torch's version counters do
        # not see; fresh tensors each call make the module repack.
        out, state = torch.func.functional_call(
            fast, dict(zip(names, [p.clone() for p in params])),
            (x if lengths is None else pack_padded_sequence(
                x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False), hx))
        if lengths is not None:
            out = out.data
        return (out, *states(state))

    assert torch.autograd.gradcheck(function, (x, h0, c0, *params))


def test_called_twice_before_backward_shared_weights():
    fast, stock = make_pair("gru", input_size=3, hidden_size=4, bidirectional=True)
    gen = torch.Generator().manual_seed(2)
    x1 = torch.randn(4, 2, 3, generator=gen, dtype=torch.float64)
    x2 = torch.randn(6, 3, 3, generator=gen, dtype=torch.float64)  # other sizes
    grads = []
    for module in (stock, fast):
        a, _ = module(x1)
        b, h = module(x2)  # the second call must not overwrite the first call's record
        (a.sin().sum() + (b * b).sum() + h.sum()).backward()
        grads.append([p.grad for p in module.parameters()])
    for a, e in zip(grads[1], grads[0]):
        close(a, e, 1e-10, "gradient of a module used twice")


def test_parameter_replaced_between_forward_and_backward():
    fast, stock = make_pair("lstm", input_size=3, hidden_size=4)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    results = []
    for module in (stock, fast):
        old = module.weight_hh_l0
        out, _ = module(x)
        module.weight_hh_l0 = nn.Parameter(old.detach() * 3)  # the old one is unchanged
        out2, _ = module(x)  # forces a repack with the new weight
        (out.sum() + 0 * out2.sum()).backward()
        results.append(old.grad)
    close(results[1], results[0], 1e-10, "gradient with the forward pass's weights")


def test_in_place_change_before_backward_raises_like_pytorch():
    fast = ft.LSTM(3, 4)
    out, _ = fast(torch.randn(5, 2, 3))
    with torch.no_grad():
        fast.weight_ih_l0.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_repacks_only_when_a_parameter_changed():
    fast = ft.LSTM(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    fast(x)
    assert fast._fastrnn_repacks == 2  # the first call packs each stacked layer
    out, _ = fast(x)
    assert fast._fastrnn_repacks == 2  # nothing changed
    optimizer = torch.optim.SGD(fast.parameters(), lr=0.5)
    out.pow(2).sum().backward()
    optimizer.step()
    stock = nn.LSTM(3, 4, num_layers=2)
    stock.load_state_dict(fast.state_dict())
    close(fast(x)[0], stock(x)[0], 1e-5, "output after an optimizer step")
    assert fast._fastrnn_repacks == 4
    fast.weight_hh_l1 = nn.Parameter(torch.zeros(16, 4))  # only layer 1 changes
    stock.weight_hh_l1 = nn.Parameter(torch.zeros(16, 4))
    close(fast(x)[0], stock(x)[0], 1e-5, "output after assigning a parameter")
    assert fast._fastrnn_repacks == 5
    fast.double()
    stock.double()
    close(fast(x.double())[0], stock(x.double())[0], 1e-10, "output after .double()")
    assert fast._fastrnn_repacks == 7


def test_dropout_between_layers_in_training_only():
    fast, stock = make_pair("lstm", input_size=3, hidden_size=8, num_layers=3, dropout=0.5)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    torch.manual_seed(0)
    a, _ = fast(x)
    b, _ = fast(x)
    assert not torch.allclose(a, b)  # fresh dropout masks per call
    a.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in fast.parameters())
    fast.eval()
    stock.eval()
    close(fast(x)[0], stock(x)[0], 1e-10, "eval mode: no dropout")
    # The first layer's input is never dropped: zeroing weight_ih_l0's columns for a
    # feature changes nothing about where dropout acts, only layers 1 and 2 get it.
    fast.train()
    with torch.no_grad():
        y0, _ = fast(x)
    assert y0.shape == (6, 4, 8)


def test_fallback_warns_once_and_gives_pytorchs_result():
    torch.manual_seed(0)
    fast = ft.LSTM(3, 4, dtype=torch.bfloat16)
    stock = nn.LSTM(3, 4, dtype=torch.bfloat16)
    stock.load_state_dict(fast.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.bfloat16)
    with pytest.warns(UserWarning, match="bfloat16"):
        out, _ = fast(x)
    assert torch.equal(out, stock(x)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast(x)  # once per module
    meta = ft.GRU(3, 4, device="meta")
    with pytest.warns(UserWarning, match="meta"):
        out, h = meta(torch.empty(5, 2, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (5, 2, 4) and h.shape == (1, 2, 4)


def test_second_order_gradient_falls_back_with_a_warning():
    fast, stock = make_pair("lstm", input_size=2, hidden_size=3, bidirectional=True)
    x0 = torch.randn(4, 2, 2, dtype=torch.float64)
    results = []
    for module in (stock, fast):
        x = x0.clone().requires_grad_(True)
        out, _ = module(x)
        with pytest.warns(UserWarning, match="second-order") if module is fast else \
                warnings.catch_warnings():
            (gx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        gx.pow(2).sum().backward()
        results.append([x.grad, *[p.grad for p in module.parameters()]])
    for a, e in zip(results[1], results[0]):
        close(a, e, 1e-10, "second-order gradient")


class TextClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(20, 6)
        self.encoder = nn.LSTM(6, 8, bidirectional=True, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, ids, lengths):
        packed = pack_padded_sequence(self.embedding(ids), lengths, batch_first=True,
                                      enforce_sorted=False)
        _, (h, _) = self.encoder(packed)
        return self.head(torch.cat([h[0], h[1]], dim=1))


def test_accelerate_and_restore_a_model():
    torch.manual_seed(0)
    model = TextClassifier()
    lstm = model.encoder
    params = list(model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    ids = torch.randint(0, 20, (5, 7))
    lengths = torch.tensor([7, 3, 5, 1, 6])
    expected = model(ids, lengths)
    assert ft.accelerate(model) == ["encoder"]
    assert type(model.encoder) is ft.LSTM and model.encoder is not lstm
    assert all(a is b for a, b in zip(model.parameters(), params))
    close(model(ids, lengths), expected, 1e-5, "accelerated model")
    with torch.inference_mode():
        close(model(ids, lengths), expected, 1e-5, "accelerated model, inference mode")
    model.eval()
    with torch.no_grad():
        close(model(ids, lengths), expected, 1e-5, "accelerated model, eval + no_grad")
    model.train()
    # the optimizer built before the swap trains the fastrnn module's parameters
    loss = nn.functional.cross_entropy(model(ids, lengths), torch.tensor([0, 1, 2, 0, 1]))
    loss.backward()
    optimizer.step()
    assert lstm.weight_ih_l0.grad is not None
    after = model(ids, lengths)
    assert ft.accelerate(model) == []  # nothing left to swap
    assert ft.restore(model) == ["encoder"]
    assert type(model.encoder) is nn.LSTM
    assert all(a is b for a, b in zip(model.parameters(), params))
    close(after, model(ids, lengths), 1e-5, "restored model after a training step")
    assert torch.equal(lstm(model.embedding(ids))[0], model.encoder(model.embedding(ids))[0])


def test_accelerate_keeps_a_shared_module_shared_and_refuses_a_bare_rnn():
    shared = nn.GRU(3, 4)
    model = nn.ModuleDict({"a": shared, "b": nn.Sequential(shared, nn.LSTM(4, 2))})
    assert sorted(ft.accelerate(model)) == ["a", "b.0", "b.1"]
    assert model["a"] is model["b"][0] and type(model["a"]) is ft.GRU
    with pytest.raises(TypeError, match="accelerate_module"):
        ft.accelerate(nn.LSTM(3, 4))
    fast = ft.accelerate_module(nn.LSTM(3, 4))
    assert type(fast) is ft.LSTM and type(ft.restore_module(fast)) is nn.LSTM


def test_module_pickles_without_its_weight_cache(tmp_path):
    import copy
    fast = ft.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    fast(x)
    clone = copy.deepcopy(fast)
    assert clone._fastrnn_layers == [None]
    close(clone(x)[0], fast(x)[0], 0, "deep copy")


def test_text_classifier_example_trains_alike_with_both_modules():
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
    import torch_text_classifier as example
    batches = example.make_batches(steps=25, batch=8, max_len=12, seed=0)
    fast, _ = example.train(batches, accelerate=True)
    stock, _ = example.train(batches, accelerate=False)
    assert max(abs(a - b) for a, b in zip(fast, stock)) < 1e-9
    assert fast[-1] < fast[0]
