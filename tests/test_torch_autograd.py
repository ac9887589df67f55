"""Gradients of fastrnn's backward pass against torch.autograd (nn.LSTM / nn.GRU).

Lengths go through torch's packed sequences, the way PyTorch users run ragged batches. Weight
gradients are mapped from torch's parameter layout by gate name here in the test. torch's LSTM
has two biases that act as their sum, so each of their gradients equals fastrnn's `bias` gradient.

Tolerances: float64 1e-10 (relative to the gradient's magnitude); float32 2e-4 relative —
the float32 activations are rational approximations (~3e-7 abs error) and gradients sum many
products over B*T rows in a different order than oneDNN / ATen.
"""
import numpy as np
import pytest

import fastrnn

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from test_torch_parity import TORCH_GATE_ORDER, make_pair  # noqa: E402

TOL = {np.float64: 1e-10, np.float32: 2e-4}


def torch_grads_by_gate(mod, cell):
    H = mod.hidden_size
    dirs = [("", "forward"), ("_reverse", "backward")] if mod.bidirectional else [("", "forward")]
    params = dict(mod.named_parameters())
    out = {}
    for k in range(mod.num_layers):
        for sfx, dname in dirs:
            for gi, gate in enumerate(TORCH_GATE_ORDER[cell]):
                rows = slice(gi * H, (gi + 1) * H)
                key = f"layer{k}.{dname}.{gate}"
                out[key + ".kernel"] = params[f"weight_ih_l{k}{sfx}"].grad[rows].T.numpy()
                out[key + ".recurrent"] = params[f"weight_hh_l{k}{sfx}"].grad[rows].T.numpy()
                if mod.bias:
                    out[key + ".bias"] = params[f"bias_ih_l{k}{sfx}"].grad[rows].numpy()
                    if cell == "gru":
                        out[key + ".recurrent_bias"] = \
                            params[f"bias_hh_l{k}{sfx}"].grad[rows].numpy()
    return out


def close(a, b, dtype, what):
    scale = max(1.0, float(np.abs(b).max()))
    err = float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
    assert err <= TOL[dtype] * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


CONFIGS = [
    # cell, I, H, layers, bidirectional, bias, B, T, lengths
    ("lstm", 3, 5, 1, False, True, 3, 6, None),
    ("lstm", 4, 7, 2, True, True, 4, 5, [5, 2, 4, 1]),
    ("lstm", 6, 20, 1, False, False, 5, 4, [1, 4, 3, 2, 4]),
    ("gru", 3, 5, 1, False, True, 3, 6, None),
    ("gru", 4, 7, 2, True, True, 4, 5, [5, 2, 4, 1]),
    ("gru", 6, 20, 1, True, False, 5, 4, [1, 4, 3, 2, 4]),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0]}-H{c[2]}-L{c[3]}-bi{int(c[4])}")
def test_gradients_match_torch_autograd(cfg, dtype):
    cell, I, H, L, bi, bias, B, T, lengths = cfg
    D = 2 if bi else 1
    mod, layer, _ = make_pair(cell, I, H, L, bi, bias, dtype, seed=3, scale="wide")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    h0 = rng.normal(scale=0.5, size=(L * D, B, H)).astype(dtype)
    c0 = rng.normal(scale=0.5, size=(L * D, B, H)).astype(dtype)
    gy = rng.normal(size=(B, T, D * H)).astype(dtype)
    gh = rng.normal(size=(L * D, B, H)).astype(dtype)
    gc = rng.normal(size=(L * D, B, H)).astype(dtype)

    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    state_t = (h0t, c0t) if cell == "lstm" else h0t
    if lengths is None:
        out_t, st_t = mod(xt, state_t)
    else:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True,
                                      enforce_sorted=False)
        out_p, st_t = mod(packed, state_t)
        out_t, _ = pad_packed_sequence(out_p, batch_first=True, total_length=T)
    loss = (out_t * torch.from_numpy(gy)).sum()
    if cell == "lstm":
        loss = loss + (st_t[0] * torch.from_numpy(gh)).sum() + (st_t[1] * torch.from_numpy(gc)).sum()
    else:
        loss = loss + (st_t * torch.from_numpy(gh)).sum()
    loss.backward()

    state = (h0, c0) if cell == "lstm" else h0
    out, _ = layer(x, lengths=lengths, initial_state=state, training=True)
    close(out, out_t.detach().numpy(), dtype, "forward output")
    gx, gs = layer.backward(gy, (gh, gc) if cell == "lstm" else gh)
    close(gx, xt.grad.numpy(), dtype, "grad x")
    if cell == "lstm":
        close(gs[0], h0t.grad.numpy(), dtype, "grad h0")
        close(gs[1], c0t.grad.numpy(), dtype, "grad c0")
    else:
        close(gs, h0t.grad.numpy(), dtype, "grad h0")
    expected = torch_grads_by_gate(mod, cell)
    assert set(layer.grads) == set(expected)
    for key, g in expected.items():
        close(layer.grads[key], g, dtype, key)
