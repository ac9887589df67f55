"""ONNX graphs as exporters and real models write them: LSTM / GRU nodes inside If / Loop / Scan
subgraphs, weights computed from initializers by constant ops (also across scopes), and
nn.LSTMCell / nn.GRUCell written as primitive ops. Every layer is checked against ONNX Runtime's
own record of the recurrent node on the same graph (the node's inputs and outputs exposed as
graph outputs) or against the model's outputs; float32, 1e-5."""
import importlib.util
import os

import numpy as np
import pytest

import fastrnn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")
_spec = importlib.util.spec_from_file_location("make_onnx_graphs",
                                               os.path.join(FIX, "make_onnx_graphs.py"))
graphs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graphs)
TOL = dict(rtol=1e-5, atol=1e-5)
f32 = np.float32


def check_node(layer, rec):
    """fastrnn's layer on the node's recorded X and states equals the node's Y, Y_h (Y_c)."""
    X = rec["X"]
    x = X.transpose(1, 0, 2)
    state = None
    if "initial_h" in rec:
        state = rec["initial_h"] if "initial_c" not in rec else (rec["initial_h"],
                                                                 rec["initial_c"])
    lengths = rec.get("sequence_lens")
    y, final = layer(x, initial_state=state, lengths=lengths)
    if "Y" in rec:
        T, D, B, H = rec["Y"].shape
        np.testing.assert_allclose(y, rec["Y"].transpose(2, 0, 1, 3).reshape(B, T, D * H), **TOL)
    finals = final if isinstance(final, tuple) else (final,)
    for got, role in zip(finals, ("Y_h", "Y_c")):
        if role in rec:
            np.testing.assert_allclose(got, rec[role], **TOL)


def check_weights(layer, rec, cell):
    """The folded weights are ONNX Runtime's W, R, B exactly."""
    from fastrnn.io._common import join_rows
    from fastrnn.io.onnx import GATE_ORDER
    D = layer.num_directions
    Ws, Rs = zip(*[join_rows(layer, GATE_ORDER[cell], 0, d)[:2]
                   for d in ("forward", "backward")[:D]])
    np.testing.assert_array_equal(np.stack(Ws), rec["W"])
    np.testing.assert_array_equal(np.stack(Rs), rec["R"])


def check_all(model, feeds, expect_paths):
    layers = fastrnn.load_all(model)
    layers = layers if isinstance(layers, dict) else {layers.name: layers}
    recs = graphs.record(model, feeds)
    assert sorted(recs) == sorted(expect_paths), (sorted(recs), expect_paths)
    for path, rec in recs.items():
        check_node(layers[path], rec)
        check_weights(layers[path], rec, layers[path]._cell)
    return layers


# ---- hand-built graphs -----------------------------------------------------------------------

I, H, B, T = 3, 4, 2, 5


def _c(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


class Builder:
    """Nodes that compute ONNX W / R / B from torch-layout weights with constant ops, in the
    forms of a given opset."""

    def __init__(self, opset, prefix):
        self.opset, self.p, self.nodes, self.k = opset, prefix, [], 0

    def name(self, what):
        self.k += 1
        return f"{self.p}{what}_{self.k}"

    def const_ints(self, values):
        out = self.name("ints")
        if self.opset >= 12:
            self.nodes.append(helper.make_node("Constant", [], [out], value_ints=list(values)))
        else:
            self.nodes.append(helper.make_node("Constant", [], [out],
                                               value=_c(out, np.array(values, np.int64))))
        return out

    def slice(self, x, start, end, axis):
        out = self.name("slice")
        if self.opset < 10:
            self.nodes.append(helper.make_node("Slice", [x], [out], starts=[start], ends=[end],
                                               axes=[axis]))
        else:   # negative axis, explicit step
            self.nodes.append(helper.make_node(
                "Slice", [x, self.const_ints([start]), self.const_ints([end]),
                          self.const_ints([axis - 2]), self.const_ints([1])], [out]))
        return out

    def unsqueeze0(self, x):
        out = self.name("unsq")
        if self.opset < 13:
            self.nodes.append(helper.make_node("Unsqueeze", [x], [out], axes=[0]))
        else:
            self.nodes.append(helper.make_node("Unsqueeze", [x, self.const_ints([0])], [out]))
        return out

    def split4(self, x):
        outs = [self.name("part") for _ in range(4)]
        if self.opset < 13:
            self.nodes.append(helper.make_node("Split", [x], outs, axis=0, split=[H] * 4))
        elif self.opset < 18:
            self.nodes.append(helper.make_node("Split", [x, self.const_ints([H] * 4)], outs,
                                               axis=0))
        else:
            self.nodes.append(helper.make_node("Split", [x], outs, axis=0, num_outputs=4))
        return outs

    def node(self, op, inputs, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def lstm_weights(self, w_ih, w_hh, b_ih, b_hh):
        """torch (i, f, g, o) blocks -> ONNX (i, o, f, c), through Slice / Split / Concat /
        Unsqueeze / Gather / Transpose / Cast / arithmetic / Shape / ConstantOfShape."""
        i, f, g, o = self.split4(w_ih)                           # W by Split
        W = self.unsqueeze0(self.node("Concat", [i, o, f, g], axis=0))
        parts = [self.slice(w_hh, k * H, (k + 1) * H, 0) for k in range(4)]   # R by Slice
        r_t = self.node("Transpose", [self.node("Concat", [parts[0], parts[3], parts[1],
                                                            parts[2]], axis=0)], perm=[1, 0])
        R = self.unsqueeze0(self.node("Transpose", [r_t], perm=[1, 0]))
        # B: the torch biases gathered into ONNX order (negative indices), doubled and halved
        order = np.concatenate([np.arange(0, H), np.arange(3 * H, 4 * H),
                                np.arange(H, 2 * H), np.arange(2 * H, 3 * H)]) - 4 * H
        idx = self.name("order")
        self.nodes.append(helper.make_node("Constant", [], [idx], value=_c(idx, order)))
        bw = self.node("Gather", [b_ih, idx], axis=0)
        br = self.node("Gather", [b_hh, idx], axis=0)
        two = self.name("two")
        self.nodes.append(helper.make_node("Constant", [], [two],
                                           value=_c(two, np.array(2.0, np.float64))))
        both = self.node("Cast", [self.node("Concat", [bw, br], axis=0)], to=TensorProto.DOUBLE)
        both = self.node("Div", [self.node("Mul", [both, two]), two])
        both = self.node("Neg", [self.node("Neg", [both])])
        zeros = self.node("ConstantOfShape", [self.node("Shape", [both])],
                          value=_c("z", np.zeros(1, np.float64)))
        both = self.node("Sub", [self.node("Add", [both, zeros]), zeros])
        shape = self.const_ints([1, -1])
        Bv = self.node("Cast", [self.node("Reshape", [both, shape])], to=TensorProto.FLOAT)
        return W, R, Bv


def _torch_weights(rng, G, hidden, prefix):
    return [_c(f"{prefix}{k}", rng.normal(size=s).astype(f32)) for k, s in
            (("w_ih", (G * hidden, I)), ("w_hh", (G * hidden, hidden)), ("b_ih", (G * hidden,)),
             ("b_hh", (G * hidden,)))]


def silero_like(opset):
    """If(cond): then = LSTM with W/R/B folded from outer torch-layout initializers (as
    torch.jit.script's LSTMCell export, e.g. Silero VAD, writes them); else = GRU whose weights
    are Constants of the branch, transposed."""
    rng = np.random.default_rng(opset)
    inits = _torch_weights(rng, 4, H, "lstm_")
    then = Builder(opset, "t_")
    W, R, Bv = then.lstm_weights(*[t.name for t in inits])
    then.nodes.append(helper.make_node("LSTM", ["X", W, R, Bv, "", "h0", "c0"],
                                       ["t_Y", "t_Yh", "t_Yc"], hidden_size=H))
    then.nodes.append(helper.make_node("Identity", ["t_Yh"], ["t_out"]))
    other = Builder(opset, "e_")
    gw = rng.normal(size=(1, I, 3 * H)).astype(f32)       # stored transposed
    gr = rng.normal(size=(1, 3 * H, H)).astype(f32)
    gb = rng.normal(size=(1, 6 * H)).astype(f32)
    for nm, v in (("e_wt", gw), ("e_r", gr), ("e_b", gb)):
        other.nodes.append(helper.make_node("Constant", [], [nm], value=_c(nm, v)))
    other.nodes.append(helper.make_node("Transpose", ["e_wt"], ["e_w"], perm=[0, 2, 1]))
    other.nodes.append(helper.make_node("GRU", ["X", "e_w", "e_r", "e_b", "", "h0"],
                                        ["e_Y", "e_Yh"], hidden_size=H, linear_before_reset=1))
    other.nodes.append(helper.make_node("Identity", ["e_Yh"], ["e_out"]))
    out_vi = lambda nm: helper.make_tensor_value_info(nm, TensorProto.FLOAT, None)  # noqa: E731
    then_g = helper.make_graph(then.nodes, "then", [], [out_vi("t_out")])
    else_g = helper.make_graph(other.nodes, "else", [], [out_vi("e_out")])
    node = helper.make_node("If", ["cond"], ["Y_h"], name="branch", then_branch=then_g,
                            else_branch=else_g)
    graph = helper.make_graph(
        [node], "silero_like",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I]),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, B, H]),
         helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, B, H]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [out_vi("Y_h")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def _feeds(rng, cond):
    return dict(X=rng.normal(size=(T, B, I)).astype(f32),
                h0=rng.normal(size=(1, B, H)).astype(f32),
                c0=rng.normal(size=(1, B, H)).astype(f32), cond=np.array(cond))


@pytest.mark.parametrize("opset", [9, 11, 13, 15, 18])
def test_if_branches_with_folded_weights(opset):
    """Silero's pattern at the opset forms of Slice (attributes < 10), Unsqueeze (attribute
    < 13), Split (attribute < 13, input 13-17, num_outputs 18) and Constant (value_ints >= 12)."""
    model = silero_like(opset)
    layers = fastrnn.load_all(model)
    lstm = f"branch.then_branch/LSTM_{_index(model, 'then_branch', 'LSTM')}"
    gru = f"branch.else_branch/GRU_{_index(model, 'else_branch', 'GRU')}"
    assert sorted(layers) == [gru, lstm]
    rng = np.random.default_rng(1)
    for cond, path in ((True, lstm), (False, gru)):
        check_all(model, _feeds(rng, cond), [path])
        assert fastrnn.from_onnx(model, node=path) is not None


def _index(model, branch, op):
    g = next(a.g for a in model.graph.node[0].attribute if a.name == branch)
    return [n.op_type for n in g.node].index(op)


def _lstm_body_graph(inputs, outputs, extra_nodes=()):
    rng = np.random.default_rng(7)
    W = rng.normal(size=(1, 4 * H, I)).astype(f32)
    R = rng.normal(size=(1, 4 * H, H)).astype(f32)
    inits = [_c("W_outer", W), _c("R_outer", R)]
    nodes = list(extra_nodes) + [
        helper.make_node("Identity", ["W_outer"], ["W_in"]),
        helper.make_node("LSTM", ["x_in", "W_in", "R_outer"], ["y_raw", "y_h", "y_c"],
                         hidden_size=H, name="cell")]
    return nodes, inits


def test_loop_body():
    """A Loop (one trip) whose body runs an LSTM on an outer value with outer weights."""
    nodes, inits = _lstm_body_graph(None, None)
    nodes = [helper.make_node("Identity", ["X"], ["x_in"])] + nodes + [
        helper.make_node("Identity", ["cond_in"], ["cond_out"])]
    body = helper.make_graph(
        nodes, "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                        helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("y_h", TensorProto.FLOAT, None)])
    loop = helper.make_node("Loop", ["trips", "keep"], ["Ys"], body=body)
    graph = helper.make_graph(
        [loop], "loop", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])],
        [helper.make_tensor_value_info("Ys", TensorProto.FLOAT, None)],
        inits + [_c("trips", np.array(1, np.int64)), _c("keep", np.array(True))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    layer = fastrnn.from_onnx(model)
    assert layer.name == "Loop_0.body/cell"
    x = np.random.default_rng(2).normal(size=(T, B, I)).astype(f32)
    exposed, tops = graphs.expose(model, [(0, "body")], ["x_in", "W_in", "y_raw", "y_h", "y_c"])
    X, W, Y, Yh, Yc = graphs.session(exposed).run(tops, dict(X=x))   # stacked over 1 trip
    check_node(layer, dict(X=X[0], Y=Y[0], Y_h=Yh[0], Y_c=Yc[0]))
    np.testing.assert_array_equal(W[0], numpy_helper.to_array(model.graph.initializer[0]))


def test_scan_body():
    """A Scan over a stack of sequences; the body's LSTM reads the outer weights."""
    nodes, inits = _lstm_body_graph(None, None)
    body = helper.make_graph(
        nodes, "body", [helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [T, B, I])],
        [helper.make_tensor_value_info("y_h", TensorProto.FLOAT, None)])
    scan = helper.make_node("Scan", ["Xs"], ["Ys"], body=body, num_scan_inputs=1, name="scan")
    graph = helper.make_graph(
        [scan], "scan", [helper.make_tensor_value_info("Xs", TensorProto.FLOAT, [2, T, B, I])],
        [helper.make_tensor_value_info("Ys", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    layer = fastrnn.from_onnx(model)
    assert layer.name == "scan.body/cell"
    xs = np.random.default_rng(3).normal(size=(2, T, B, I)).astype(f32)
    exposed, tops = graphs.expose(model, [(0, "body")], ["x_in", "y_raw", "y_h", "y_c"])
    X, Y, Yh, Yc = graphs.session(exposed).run(tops, dict(Xs=xs))
    for k in range(2):      # one record per scan iteration
        check_node(layer, dict(X=X[k], Y=Y[k], Y_h=Yh[k], Y_c=Yc[k]))


def test_top_level_names_and_inspect(tmp_path):
    model = silero_like(13)
    path = tmp_path / "nested.onnx"
    onnx.save(model, path)
    from fastrnn.io import inspect
    names = [n for n, _ in inspect(path)]
    assert names == list(fastrnn.load_all(path))
    assert all(n.startswith("branch.") for n in names)
    from fastrnn.__main__ import main as cli
    assert cli(["inspect", str(path)]) == 0
    # a top-level node keeps its plain name
    flat = helper.make_model(helper.make_graph(
        [helper.make_node("GRU", ["X", "w", "r"], ["Y"], hidden_size=H)], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [_c("w", np.ones((1, 3 * H, I), f32)), _c("r", np.ones((1, 3 * H, H), f32))]))
    assert fastrnn.from_onnx(flat).name == "GRU_0"


# ---- refusals --------------------------------------------------------------------------------

def _lstm_model(w_nodes, w_name, extra_inputs=(), inits=(), initial_h=None):
    rng = np.random.default_rng(0)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in extra_inputs]
    base = [_c("W0", rng.normal(size=(1, 4 * H, I)).astype(f32)),
            _c("R0", rng.normal(size=(1, 4 * H, H)).astype(f32))]
    ins = ["X", w_name, "R0"]
    if initial_h is not None:
        ins += ["", "", initial_h]
    node = helper.make_node("LSTM", ins, ["Y"], hidden_size=H, name="rnn")
    graph = helper.make_graph(list(w_nodes) + [node], "g", inputs,
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              base + list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_weight_from_graph_input_is_refused():
    model = _lstm_model([helper.make_node("Add", ["W0", "noise"], ["W1"], name="mix")], "W1",
                        extra_inputs=["noise"])
    with pytest.raises(ValueError, match=r"node 'rnn'.*input W \('W1'\).*graph input "
                                         r"'noise' \(runtime data\)"):
        fastrnn.from_onnx(model)


def test_weight_from_unfolded_op_is_refused():
    model = _lstm_model([helper.make_node("Sin", ["W0"], ["W1"], name="wave")], "W1")
    with pytest.raises(ValueError, match=r"input W \('W1'\).*Sin node 'wave'.*does not fold"):
        fastrnn.from_onnx(model)


def test_weight_from_loop_iteration_is_refused():
    nodes = [helper.make_node("Cast", ["i"], ["i_f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["W0", "i_f"], ["W_in"]),
             helper.make_node("LSTM", ["X", "W_in", "R0"], ["y"], hidden_size=H, name="cell"),
             helper.make_node("Identity", ["c_in"], ["c_out"])]
    body = helper.make_graph(nodes, "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("c_in", TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, [])])
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", ""], [], body=body)], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])], [],
        [_c("W0", rng.normal(size=(1, 4 * H, I)).astype(f32)),
         _c("R0", rng.normal(size=(1, 4 * H, H)).astype(f32)), _c("n", np.array(2))])
    with pytest.raises(ValueError, match=r"Loop_0.body/cell.*graph input 'i'"):
        fastrnn.from_onnx(helper.make_model(graph))


def test_cycles_and_huge_shapes_are_refused_cleanly():
    cyc = _lstm_model([helper.make_node("Identity", ["W2"], ["W1"]),
                       helper.make_node("Identity", ["W1"], ["W2"])], "W1")
    with pytest.raises(ValueError, match="too deep or cyclic"):
        fastrnn.from_onnx(cyc)
    huge = _lstm_model([helper.make_node("ConstantOfShape", ["big"], ["W1"])], "W1",
                       inits=[_c("big", np.array([1 << 20, 1 << 20, 4], np.int64))])
    with pytest.raises(ValueError, match="more than the folder allows"):
        fastrnn.from_onnx(huge)


def test_initial_state_constant_zero_runtime_or_refused():
    fastrnn.from_onnx(_lstm_model([], "W0", extra_inputs=["h0"], initial_h="h0"))
    zero = _lstm_model([helper.make_node("ConstantOfShape", ["shape"], ["h0"])], "W0",
                       inits=[_c("shape", np.array([1, B, H], np.int64))], initial_h="h0")
    fastrnn.from_onnx(zero)
    ones = _lstm_model([], "W0", inits=[_c("h0", np.ones((1, B, H), f32))], initial_h="h0")
    with pytest.raises(ValueError, match="constant non-zero initial state"):
        fastrnn.from_onnx(ones)


# ---- torch.onnx.export -----------------------------------------------------------------------

def _legacy_export(module, args, tmp_path, name):
    torch = pytest.importorskip("torch")
    import warnings
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=17)
    return onnx.load(path)


def _script(module):
    import warnings

    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # torch.jit.script is deprecated, still exported
        return torch.jit.script(module)


def test_legacy_export_scripted_if_with_lstm_and_gru(tmp_path):
    """torch.jit.script keeps the `if` as an ONNX If; each branch holds one recurrent node."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(3, 4, batch_first=True)
            self.gru = torch.nn.GRU(3, 4, batch_first=True, bidirectional=True)

        def forward(self, x, flag):
            if bool(flag.sum() > 0):
                y, _ = self.lstm(x)
                return y
            y, _ = self.gru(x)
            return y[..., :4]

    x = torch.randn(2, 5, 3)
    model = _legacy_export(_script(Branchy()), (x, torch.ones(1)), tmp_path, "branchy")
    layers = fastrnn.load_all(model)
    assert sorted(layers) == ["/If.else_branch//GRU", "/If.then_branch//LSTM"]
    names = [i.name for i in model.graph.input]
    for flag, path in ((1.0, "/If.then_branch//LSTM"), (-1.0, "/If.else_branch//GRU")):
        check_all(model, dict(zip(names, [x.numpy(), np.array([flag], f32)])), [path])


def test_legacy_export_scripted_cell_folds_like_silero(tmp_path):
    """A scripted nn.LSTMCell becomes an LSTM node whose W, R, B are Slice / Concat / Unsqueeze
    of the cell's parameters inside the If branch (Silero VAD's pattern). (torch 2.13's legacy
    exporter fails on a scripted nn.GRUCell.)"""
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)

    class Cell(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTMCell(3, 4)

        def forward(self, x, h, c, flag):
            if bool(flag.sum() > 0):
                h2, c2 = self.lstm(x, (h, c))
                return h2
            return h

    args = [torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)]
    model = _legacy_export(_script(Cell()), (*args, torch.ones(1)), tmp_path, "cell")
    layer = fastrnn.from_onnx(model)
    assert layer.name == "/If.then_branch//lstm/LSTM"
    names = [i.name for i in model.graph.input]
    feeds = dict(zip(names, [a.numpy() for a in args] + [np.ones(1, f32)]))
    check_all(model, feeds, [layer.name])
    y, _ = layer.step(args[0].numpy(), (args[1].numpy()[None], args[2].numpy()[None]))
    np.testing.assert_allclose(y, graphs.session(model).run(None, feeds)[0], **TOL)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_legacy_export_cell_primitive_ops(kind, tmp_path):
    """A traced nn.LSTMCell / nn.GRUCell is Gemm + Split + Sigmoid / Tanh + Mul / Add."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    cell = (torch.nn.LSTMCell if kind == "lstm" else torch.nn.GRUCell)(3, 5)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = cell

        def forward(self, x, h, c):
            return self.cell(x, (h, c)) if kind == "lstm" else self.cell(x, h)

    args = [torch.randn(2, 3), torch.randn(2, 5), torch.randn(2, 5)]
    model = _legacy_export(Wrap(), tuple(args), tmp_path, kind)
    layer = fastrnn.from_onnx(model)
    assert layer.name == ("LSTMCell_0" if kind == "lstm" else "GRUCell_0")
    feeds = {i.name: a.numpy() for i, a in zip(model.graph.input, args)}
    want = graphs.session(model).run(None, feeds)
    state = tuple(a.numpy()[None] for a in args[1:]) if kind == "lstm" else args[1].numpy()[None]
    _, final = layer(args[0].numpy()[:, None], initial_state=state)
    finals = final if isinstance(final, tuple) else (final,)
    for got, w in zip(finals, want):
        np.testing.assert_allclose(got[0], w, **TOL)


# ---- torch's dynamo exporter: fixtures from tests/fixtures/make_onnx_graphs.py ----------------

def _fixture(name):
    return (onnx.load(os.path.join(FIX, f"{name}.onnx")),
            dict(np.load(os.path.join(FIX, f"{name}.expected.npz"))))


def test_dynamo_cond_rnn_fixture():
    model, exp = _fixture("onnx_graph_dynamo_cond_rnn")
    layers = fastrnn.load_all(model)
    assert sorted(layers) == ["node_cond__0.else_branch/node_gru__1",
                              "node_cond__0.then_branch/node_lstm__2"]
    seen = 0
    for key in exp:
        run, _, rest = key.partition("_node:")
        if not rest or not rest.endswith(":X"):
            continue
        path = rest[:-2]
        rec = {k.rsplit(":", 1)[1]: v for k, v in exp.items()
               if k.startswith(f"{run}_node:{path}:")}
        check_node(layers[path], rec)
        check_weights(layers[path], rec, layers[path]._cell)
        seen += 1
    assert seen == 2


def test_dynamo_cond_cells_fixture():
    """torch.cond between two LSTMCells: primitive ops in each If branch, one layer each."""
    model, exp = _fixture("onnx_graph_dynamo_cond_cells")
    layers = fastrnn.load_all(model)
    names = sorted(layers)
    assert len(names) == 2 and all(n.endswith("LSTMCell_0") for n in names)
    for run, branch in (("run0", "then_branch"), ("run1", "else_branch")):
        layer = next(v for k, v in layers.items() if f".{branch}/" in k)
        _, (h, c) = layer(exp[f"{run}_in_x"][:, None],
                          initial_state=(exp[f"{run}_in_h"][None], exp[f"{run}_in_c"][None]))
        np.testing.assert_allclose(h[0], exp[f"{run}_out0"], **TOL)
        np.testing.assert_allclose(c[0], exp[f"{run}_out1"], **TOL)


def test_dynamo_grucell_fixture():
    model, exp = _fixture("onnx_graph_dynamo_grucell")
    layer = fastrnn.from_onnx(model)
    assert layer.name == "GRUCell_0" and layer.reset_after
    y, _ = layer.step(exp["run0_in_x"], exp["run0_in_h"][None])
    np.testing.assert_allclose(y, exp["run0_out0"], **TOL)


def test_dynamo_export_live(tmp_path):
    """The fixtures' modules exported now (needs onnxscript for torch's dynamo exporter)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    import warnings
    CondRNN, CondCells, _ = graphs._dynamo_modules()
    torch.manual_seed(3)
    x = torch.randn(2, 5, 3)
    path = tmp_path / "cond.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(CondRNN(), (x, torch.ones(1)), str(path), dynamo=True,
                          external_data=False)
    model = onnx.load(path)
    layers = fastrnn.load_all(model)
    for flag in (1.0, -1.0):
        feeds = dict(x=x.numpy(), flag=np.array([flag], f32))
        recs = graphs.record(model, feeds)
        assert len(recs) == 1
        for p, rec in recs.items():
            check_node(layers[p], rec)


# ---- Silero VAD (only when the silero-vad package is installed) --------------------------------

def _silero_file(name):
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("silero-vad is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", name)
    if not os.path.exists(path):
        pytest.skip(f"silero-vad does not ship {name}")
    return path


def _silero_feeds(sr, seed):
    rng = np.random.default_rng(seed)
    n = 512 if sr == 16000 else 256
    return dict(input=rng.uniform(-0.5, 0.5, size=(1, n)).astype(f32),
                state=rng.normal(scale=0.3, size=(2, 1, 128)).astype(f32),
                sr=np.array(sr, np.int64))


def test_silero_vad_branches_against_onnxruntime(tmp_path):
    path = _silero_file("silero_vad.onnx")
    model = onnx.load(path)
    layers = fastrnn.load_all(path)
    assert len(layers) >= 2 and all(v._cell == "lstm" and v.hidden_size == 128
                                    for v in layers.values())
    ran = set()
    for sr in (16000, 8000):
        feeds = _silero_feeds(sr, sr)
        recs = graphs.record(model, feeds)
        assert recs, f"no LSTM ran for sr={sr}"
        for p, rec in recs.items():
            check_node(layers[p], rec)
            check_weights(layers[p], rec, "lstm")
            ran.add(p)
    assert len(ran) >= 2       # one layer per sample-rate branch
    from fastrnn.io import inspect
    assert [n for n, _ in inspect(path)] == list(layers)


def test_silero_vad_ifless_cells_against_onnxruntime():
    """silero_vad_op18_ifless.onnx: the dynamo export, an LSTMCell as primitive ops per branch;
    the model's `stateN` output is the cell's (h, c)."""
    path = _silero_file("silero_vad_op18_ifless.onnx")
    model = onnx.load(path)
    layers = fastrnn.load_all(path)
    assert sorted(layers) == sorted(f"{model.graph.node[-1].name}.{b}/LSTMCell_0"
                                    for b in ("then_branch", "else_branch"))
    if_index = [n.op_type for n in model.graph.node].index("If")
    for sr, branch in ((16000, "then_branch"), (8000, "else_branch")):
        sub = next(a.g for a in model.graph.node[if_index].attribute if a.name == branch)
        x_name = _cell_input(sub)
        exposed, tops = graphs.expose(model, [(if_index, branch)], [x_name])
        feeds = _silero_feeds(sr, 1)
        sess = graphs.session(exposed)
        names = [o.name for o in sess.get_outputs()]
        values = dict(zip(names, sess.run(None, feeds)))
        layer = next(v for k, v in layers.items() if f".{branch}/" in k)
        state = feeds["state"]
        y, (h, c) = layer.step(values[tops[0]], (state[:1], state[1:]))
        np.testing.assert_allclose(h[0], values["stateN"][0], **TOL)
        np.testing.assert_allclose(c[0], values["stateN"][1], **TOL)


def _cell_input(graph):
    """The x of the cell: the Gemm feeding the gate sum whose input is not read from `state`."""
    prod = {o: n for n in graph.node for o in n.output}
    split = next(n for n in graph.node if n.op_type == "Split" and len(n.output) == 4)
    add = prod[split.input[0]]
    for term in add.input:
        gemm = prod[term]
        src = prod.get(gemm.input[0])
        if not (src is not None and src.op_type == "Gather" and src.input[0] == "state"):
            return gemm.input[0]
    raise AssertionError("no cell input found")
