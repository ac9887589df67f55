"""LSTM projection (proj_size, proj_clip) against torch.nn.LSTM(proj_size=...) and a plain
numpy loop: whole sequences, packed (ragged) batches, stacks, both directions, initial states,
threads, streaming steps and the state_dict interchange."""
import numpy as np
import pytest

import fastrnn
from test_variants import randomize_peepholes

torch = pytest.importorskip("torch")
# torch runs its projection LSTM without oneDNN and says so once per process.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")


def _pair(I, H, P, num_layers=1, bidirectional=False, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    module = torch.nn.LSTM(I, H, proj_size=P, num_layers=num_layers,
                           bidirectional=bidirectional, batch_first=True, dtype=dtype).eval()
    layer = fastrnn.from_torch(module)
    return module, layer


@pytest.mark.parametrize("I,H,P,L,bi", [(4, 7, 3, 1, False), (5, 33, 17, 2, True),
                                        (3, 20, 9, 1, False), (6, 40, 39, 1, True),
                                        (2, 16, 1, 2, False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_projection_vs_torch(isa, I, H, P, L, bi, dtype):
    module, layer = _pair(I, H, P, L, bi, dtype)
    assert layer.proj_size == P and layer.hidden_size == H
    rng = np.random.default_rng(1)
    B, T = 3, 6
    D = 2 if bi else 1
    x = rng.normal(size=(B, T, I))
    h0 = rng.normal(size=(L * D, B, P)) * 0.5
    c0 = rng.normal(size=(L * D, B, H)) * 0.5
    out, (h, c) = layer(x, initial_state=(h0, c0))
    assert out.shape == (B, T, D * P) and h.shape == (L * D, B, P) and c.shape == (L * D, B, H)
    with torch.no_grad():
        ref, (rh, rc) = module(torch.tensor(x, dtype=dtype),
                               (torch.tensor(h0, dtype=dtype), torch.tensor(c0, dtype=dtype)))
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, ref.numpy(), **tol)
    np.testing.assert_allclose(h, rh.numpy(), **tol)
    np.testing.assert_allclose(c, rc.numpy(), **tol)


@pytest.mark.parametrize("bi", [False, True])
def test_projection_ragged_batch_vs_packed_sequence(bi):
    module, layer = _pair(5, 24, 8, 2, bi)
    rng = np.random.default_rng(2)
    lengths = np.array([6, 1, 4, 0, 6, 3])
    x = rng.normal(size=(6, 6, 5))
    out, (h, c) = layer(x, lengths=lengths)
    keep = lengths > 0  # torch's packing refuses empty rows
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.tensor(x[keep]), torch.tensor(lengths[keep]), batch_first=True,
        enforce_sorted=False)
    with torch.no_grad():
        ref, (rh, rc) = module(packed)
    ref, _ = torch.nn.utils.rnn.pad_packed_sequence(ref, batch_first=True, total_length=6)
    np.testing.assert_allclose(out[keep], ref.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h[:, keep], rh.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c[:, keep], rc.numpy(), rtol=1e-10, atol=1e-12)
    assert np.all(out[~keep] == 0) and np.all(h[:, ~keep] == 0)


def test_projection_threads_bitwise():
    before = fastrnn.get_num_threads()
    try:
        for B in (1, 2, 17):  # column split (few rows) and row split
            _, layer = _pair(24, 200, 64, dtype=torch.float32, seed=B)
            x = np.random.default_rng(B).normal(size=(B, 7, 24)).astype(np.float32)
            m = np.random.default_rng(B).random((B, 7)) > 0.2
            fastrnn.set_num_threads(1)
            one = layer(x, mask=m)
            fastrnn.set_num_threads(2)
            two = layer(x, mask=m)
            np.testing.assert_array_equal(one[0], two[0])
            np.testing.assert_array_equal(one[1][0], two[1][0])
            np.testing.assert_array_equal(one[1][1], two[1][1])
    finally:
        fastrnn.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_projection_step_equals_sequence(isa, dtype):
    """step() runs the C streaming kernels (fr_step), which project each step the same way as
    the sequence kernel: the same bits."""
    _, layer = _pair(3, 12, 5, 2, dtype=dtype)
    x = np.random.default_rng(3).normal(size=(2, 5, 3)).astype(layer.dtype)
    seq, (h_seq, c_seq) = layer(x)
    state = None
    for t in range(5):
        y, state = layer.step(x[:, t], state)
        np.testing.assert_array_equal(y, seq[:, t])
    assert state[0].shape == (2, 2, 5) and state[1].shape == (2, 2, 12)
    np.testing.assert_array_equal(state[0], h_seq)
    np.testing.assert_array_equal(state[1], c_seq)
    clipped = fastrnn.LSTM(3, 12, proj_size=5, proj_clip=0.05, seed=1)
    seq, _ = clipped(x.astype(np.float32))
    y, _ = clipped.step(x[:, 0].astype(np.float32))
    np.testing.assert_array_equal(y, seq[:, 0])
    assert np.abs(y).max() == np.float32(0.05)


def test_projection_with_variants_and_proj_clip_vs_numpy_loop():
    """Peepholes, cell_clip and proj_clip (TF1 LSTMCell's options) against a plain loop."""
    I, H, P = 3, 6, 4
    layer = fastrnn.LSTM(I, H, proj_size=P, proj_clip=0.3, cell_clip=0.5, peepholes=True,
                         dtype="float64", seed=4)
    sd = layer.state_dict()
    rng = np.random.default_rng(5)
    for k in sd:
        sd[k] = rng.normal(size=sd[k].shape)
    layer.load_state_dict(sd)
    x = rng.normal(size=(2, 5, I))
    out, (h_n, c_n) = layer(x)
    g = lambda gate, part: sd[f"layer0.forward.{gate}.{part}"]  # noqa: E731
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h = np.zeros((2, P))
    c = np.zeros((2, H))
    clipped = 0
    for t in range(5):
        pre = {k: x[:, t] @ g(k, "kernel") + h @ g(k, "recurrent") + g(k, "bias")
               for k in ("input", "forget", "cell", "output")}
        i = sig(pre["input"] + g("input", "peephole") * c)
        f = sig(pre["forget"] + g("forget", "peephole") * c)
        c = np.clip(f * c + i * np.tanh(pre["cell"]), -0.5, 0.5)
        o = sig(pre["output"] + g("output", "peephole") * c)
        m = (o * np.tanh(c)) @ sd["layer0.forward.projection"]
        clipped += np.sum(np.abs(m) > 0.3)
        h = np.clip(m, -0.3, 0.3)
        np.testing.assert_allclose(out[:, t], h, rtol=1e-12, atol=1e-14)
    assert clipped > 0
    np.testing.assert_allclose(h_n[0], h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c_n[0], c, rtol=1e-12, atol=1e-14)


def test_projection_state_dict_interchange_with_torch():
    module, layer = _pair(4, 10, 6, 2, True)
    again = torch.nn.LSTM(4, 10, proj_size=6, num_layers=2, bidirectional=True,
                          batch_first=True, dtype=torch.float64)
    again.load_state_dict(layer.to_torch_state_dict())
    ref, new = module.state_dict(), again.state_dict()
    for k, v in ref.items():
        if k.startswith("bias_ih"):  # fastrnn keeps the sum of torch's two LSTM biases
            hh = k.replace("bias_ih", "bias_hh")
            np.testing.assert_allclose((new[k] + new[hh]).numpy(), (v + ref[hh]).numpy(),
                                       rtol=0, atol=1e-15)
        elif not k.startswith("bias_hh"):
            np.testing.assert_array_equal(new[k].numpy(), v.numpy(), err_msg=k)
    rebuilt = fastrnn.io.torch.to_torch_module(layer)
    assert rebuilt.proj_size == 6


def test_projection_bad_input_and_unsupported():
    layer = fastrnn.LSTM(3, 6, proj_size=4)
    with pytest.raises(ValueError, match=r"\(1, 2, 4\)"):
        layer(np.zeros((2, 3, 3)), initial_state=(np.zeros((1, 2, 6)), np.zeros((1, 2, 6))))
    with pytest.raises(ValueError, match="recurrent_dropout"):
        fastrnn.LSTM(3, 6, proj_size=4, recurrent_dropout=0.1)
    layer(np.zeros((2, 3, 3)), training=True)
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        layer.backward(np.zeros((2, 3, 6)))
    with pytest.raises(ValueError, match="proj_clip"):
        fastrnn.LSTM(3, 6, proj_clip=1.0)
    with pytest.raises(TypeError):
        fastrnn.GRU(3, 6, proj_size=2)
    with pytest.raises(ValueError, match="peepholes"):
        fastrnn.LSTM(3, 6, peepholes=True).to_torch()


@pytest.mark.parametrize("kw", [dict(proj_size=3),
                                dict(proj_size=4, proj_clip=0.2, peepholes=True, cell_clip=0.5),
                                dict(proj_size=5, num_layers=2, bidirectional=True,
                                     activation="relu"),
                                dict(proj_size=2, masked_output="carry", bidirectional=True),
                                dict(proj_size=7, dropout=0.3, input_forget=True)])
def test_projection_gradients_finite_differences(kw, monkeypatch):
    import test_backward
    monkeypatch.setattr(test_backward, "EPS", 1e-6)  # away from the clips' kinks
    layer = randomize_peepholes(fastrnn.LSTM(3, 6, dtype="float64", init="torch", seed=1, **kw))
    test_backward.check_gradients(layer, 3, 4, mask=np.random.default_rng(1).random((3, 4)) > 0.3)
    assert any(k.endswith(".projection") for k in layer.grads)


@pytest.mark.parametrize("bi", [False, True])
def test_projection_gradients_vs_torch_autograd(bi):
    module, layer = _pair(4, 9, 5, 2, bi, seed=3)
    rng = np.random.default_rng(4)
    B, T, D = 3, 5, 2 if bi else 1
    x = rng.normal(size=(B, T, 4))
    h0, c0 = rng.normal(size=(2 * D, B, 5)), rng.normal(size=(2 * D, B, 9))
    gy, gh, gc = rng.normal(size=(B, T, D * 5)), rng.normal(size=h0.shape), rng.normal(size=c0.shape)
    layer(x, initial_state=(h0, c0), training=True)
    gx, (gh0, gc0) = layer.backward(gy, (gh, gc))
    xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    y, (hn, cn) = module(xt, (h0t, c0t))
    ((y * torch.tensor(gy)).sum() + (hn * torch.tensor(gh)).sum()
     + (cn * torch.tensor(gc)).sum()).backward()
    tol = dict(rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(gx, xt.grad.numpy(), **tol)
    np.testing.assert_allclose(gh0, h0t.grad.numpy(), **tol)
    np.testing.assert_allclose(gc0, c0t.grad.numpy(), **tol)
    # torch's parameter gradients mapped the way the loader maps the weights
    again = fastrnn.from_torch({k: v.grad for k, v in module.named_parameters()})
    for k, v in again.state_dict().items():
        if k.endswith(".bias"):  # fastrnn's bias gradient is that of each of torch's two biases
            continue
        np.testing.assert_allclose(layer.grads[k], v, err_msg=k, **tol)
    for name, p in module.named_parameters():
        if name.startswith("bias_ih"):
            k = name[len("bias_ih_l"):]
            lay, rev = int(k.split("_")[0]), "reverse" in k
            got = np.concatenate([layer.grads[f"layer{lay}.{'backward' if rev else 'forward'}."
                                              f"{g}.bias"] for g in ("input", "forget", "cell",
                                                                     "output")])
            np.testing.assert_allclose(got, p.grad.numpy(), err_msg=name, **tol)


def test_projection_gradients_threads_bitwise():
    before = fastrnn.get_num_threads()
    try:
        out = []
        for threads in (1, 2):
            fastrnn.set_num_threads(threads)
            _, layer = _pair(24, 96, 40, 2, True, dtype=torch.float32, seed=5)
            x = np.random.default_rng(6).normal(size=(5, 7, 24)).astype(np.float32)
            m = np.random.default_rng(7).random((5, 7)) > 0.2
            y, _ = layer(x, mask=m, training=True)
            gx, _ = layer.backward(np.ones_like(y))
            out.append((gx, layer.grads))
        np.testing.assert_array_equal(out[0][0], out[1][0])
        for k in out[0][1]:
            np.testing.assert_array_equal(out[0][1][k], out[1][1][k], err_msg=k)
    finally:
        fastrnn.set_num_threads(before)
