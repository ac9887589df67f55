"""The numpy reference's cell variants (tests/reference.py) against real frameworks, so that the
oracle of tests/test_variants.py means what the frameworks mean:

* PyTorch nn.LSTM / nn.GRU (the default cell, reached through the variant keywords spelled out);
* ONNX Runtime's LSTM / GRU nodes: activations with activation_alpha / activation_beta, clip,
  peepholes (input P), input_forget, both directions, sequence_lens, initial states;
* Keras 3 LSTM / GRU (torch backend) with activation x recurrent_activation combinations,
  masked (Keras' carry semantics).

ONNX Runtime and Keras run float32: compared at 1e-5. Each test skips when its framework is
absent.
"""
import itertools
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

from reference import normalize_activation, normalize_activations, rnn_forward

GATES = {"lstm": ("input", "forget", "cell", "output"), "gru": ("update", "reset", "candidate")}


def random_params(rng, cell, I, H, dirs=("forward",), num_layers=1, peepholes=False, scale=0.6):
    p = {}
    for k in range(num_layers):
        n_in = I if k == 0 else len(dirs) * H
        for d in dirs:
            for g in GATES[cell]:
                key = f"layer{k}.{d}.{g}"
                p[key + ".kernel"] = rng.uniform(-scale, scale, (n_in, H))
                p[key + ".recurrent"] = rng.uniform(-scale, scale, (H, H))
                p[key + ".bias"] = rng.uniform(-scale, scale, H)
                if cell == "gru":
                    p[key + ".recurrent_bias"] = rng.uniform(-scale, scale, H)
                if peepholes and g != "cell":
                    p[key + ".peephole"] = rng.uniform(-scale, scale, H)
    return p


def as_float32(params):
    """The same weights rounded to float32 (what a float32 framework runs), back in float64."""
    return {k: np.asarray(v, np.float32).astype(np.float64) for k, v in params.items()}


# ---- normalisation (no framework) ----------------------------------------------------------

def test_normalisation_forms():
    assert normalize_activation("HardSigmoid") == ("hard_sigmoid", 1 / 6, 0.5)
    assert normalize_activation("hard_sigmoid", "keras2") == ("hard_sigmoid", 0.2, 0.5)
    assert normalize_activation(("LeakyRelu",)) == ("leaky_relu", 0.01, None)
    assert normalize_activation(("scaled_tanh", None, 2.0)) == ("scaled_tanh", 1.0, 2.0)
    assert normalize_activation("ThresholdedRelu") == ("thresholded_relu", 1.0, None)
    with pytest.raises(AssertionError, match="takes no alpha"):
        normalize_activation(("relu", 0.3))
    with pytest.raises(AssertionError, match="unknown activation"):
        normalize_activation("gelu")
    keras = normalize_activations("lstm", 2, activation="relu",
                                  recurrent_activation="hard_sigmoid", hard_sigmoid="keras2")
    assert keras == ((("hard_sigmoid", 0.2, 0.5), ("relu", None, None),
                      ("relu", None, None)),) * 2
    onnx_once = normalize_activations("gru", 2, activations=["Sigmoid", ("Elu", 0.5)])
    assert onnx_once == ((("sigmoid", None, None), ("elu", 0.5, None)),) * 2
    per_dir = normalize_activations("gru", 2, activations=["Sigmoid", "Tanh", "Relu", "Affine"])
    assert per_dir[1] == (("relu", None, None), ("affine", 1.0, 0.0))
    assert normalize_activations("gru", 2, activations=per_dir) == per_dir  # nested form
    with pytest.raises(AssertionError, match="excludes"):
        normalize_activations("lstm", 1, activation="relu", activations=["sigmoid"] * 3)
    with pytest.raises(AssertionError, match="need 3 or 6"):
        normalize_activations("lstm", 2, activations=["sigmoid"] * 4)


@pytest.mark.parametrize("name,alpha,beta,xs,ys", [
    ("hard_sigmoid", 1 / 6, 0.5, [-4, -1, 1, 2.5, 3.5], [0, 1 / 3, 2 / 3, 11 / 12, 1]),
    ("hard_sigmoid", 0.2, 0.5, [-3, -1, 1, 2.5], [0, 0.3, 0.7, 1]),
    ("softsign", None, None, [-3, 0, 1], [-0.75, 0, 0.5]),
    ("softplus", None, None, [0, 800, -800], [np.log(2), 800, 0]),
    ("elu", 0.5, None, [-np.log(2), 0, 2], [-0.25, 0, 2]),
    ("leaky_relu", 0.1, None, [-2, 0, 3], [-0.2, 0, 3]),
    ("thresholded_relu", 1.0, None, [0.5, 1.0, 1.5], [0, 0, 1.5]),
    ("scaled_tanh", 2.0, 0.5, [np.log(3) * 2], [2 * 0.8]),
    ("affine", 2.0, -1.0, [0, 3], [-1, 5]),
    ("relu", None, None, [-1, 2], [0, 2]),
    ("linear", None, None, [-1, 2], [-1, 2]),
])
def test_activation_table_values(name, alpha, beta, xs, ys):
    from reference import apply_activation
    with np.errstate(over="raise"):
        assert_allclose(apply_activation((name, alpha, beta), np.array(xs, float)), ys,
                        rtol=1e-14, atol=1e-15)


# ---- PyTorch: the default cell through the variant keywords -----------------------------------

@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_default_cell_spelled_out_vs_torch(cell):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    I, H, B, T = 3, 5, 4, 6
    dirs = ("forward", "backward")
    p = random_params(rng, cell, I, H, dirs, num_layers=2)
    module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(
        I, H, num_layers=2, bidirectional=True, batch_first=True).double()
    order = ("input", "forget", "cell", "output") if cell == "lstm" else \
        ("reset", "update", "candidate")
    sd = {}
    for k in range(2):
        for d, sfx in zip(dirs, ("", "_reverse")):
            pre = f"layer{k}.{d}."
            sd[f"weight_ih_l{k}{sfx}"] = np.concatenate([p[pre + g + ".kernel"].T for g in order])
            sd[f"weight_hh_l{k}{sfx}"] = np.concatenate([p[pre + g + ".recurrent"].T
                                                         for g in order])
            sd[f"bias_ih_l{k}{sfx}"] = np.concatenate([p[pre + g + ".bias"] for g in order])
            sd[f"bias_hh_l{k}{sfx}"] = np.concatenate(
                [p.get(pre + g + ".recurrent_bias", np.zeros(H)) for g in order])
    module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    x = rng.normal(size=(B, T, I))
    with torch.no_grad():
        y_t, _ = module(torch.from_numpy(x))
    slots = ["Sigmoid", "Tanh", "Tanh"][:3 if cell == "lstm" else 2]
    for kw in (dict(activation="tanh", recurrent_activation="sigmoid"),
               dict(activations=slots), dict(activations=slots * 2, clip=None)):
        y, _ = rnn_forward(cell, p, x, hidden_size=H, num_layers=2, bidirectional=True, **kw)
        assert_allclose(y, y_t.numpy(), rtol=1e-12, atol=1e-13)


# ---- ONNX Runtime ------------------------------------------------------------------------------

# ONNX Runtime (onnxruntime/core/providers/cpu/rnn/rnn_helpers.cc, ActivationFuncs): the
# activation_alpha / activation_beta lists are consumed in slot order, and only by the functions
# that take the parameter (Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu take
# alpha; Affine, ScaledTanh, HardSigmoid take beta); a function past the end of a list gets its
# default (LeakyRelu 0.01, HardSigmoid 0.2 / 0.5, Elu 1.0, the others 0).
_ORT_TAKES = {"affine": (True, True), "leakyrelu": (True, False), "thresholdedrelu": (True, False),
              "scaledtanh": (True, True), "hardsigmoid": (True, True), "elu": (True, False)}
_ORT_DEFAULTS = {"leakyrelu": (0.01, 0.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0)}


def onnx_alpha_beta(names, alphas, betas):
    """The reference's (name, alpha, beta) of each ONNX slot, as ONNX Runtime reads them."""
    alphas, betas = list(alphas), list(betas)
    out = []
    for name in names:
        key = name.lower()
        takes_a, takes_b = _ORT_TAKES.get(key, (False, False))
        da, db = _ORT_DEFAULTS.get(key, (0.0, 0.0))
        a = (alphas.pop(0) if alphas else da) if takes_a else None
        b = (betas.pop(0) if betas else db) if takes_b else None
        out.append(normalize_activation((name, a, b)))
    return out


ONNX_ORDER = {"lstm": ("input", "output", "forget", "cell"), "gru": ("update", "reset", "candidate")}


def onnx_model(cell, p, I, H, B, T, direction, attrs, peepholes=False, reset_after=True):
    from onnx import TensorProto, helper, numpy_helper
    dirs = ("forward", "backward") if direction == "bidirectional" else ("forward",)
    order = ONNX_ORDER[cell]
    f32 = np.float32
    W = np.stack([np.concatenate([p[f"layer0.{d}.{g}.kernel"].T for g in order]) for d in dirs])
    R = np.stack([np.concatenate([p[f"layer0.{d}.{g}.recurrent"].T for g in order])
                  for d in dirs])
    Bias = np.stack([np.concatenate(
        [p[f"layer0.{d}.{g}.bias"] for g in order]
        + [p.get(f"layer0.{d}.{g}.recurrent_bias", np.zeros(H)) for g in order]) for d in dirs])
    inits = [numpy_helper.from_array(W.astype(f32), "W"), numpy_helper.from_array(R.astype(f32), "R"),
             numpy_helper.from_array(Bias.astype(f32), "B")]
    inputs = ["X", "W", "R", "B", "sequence_lens", "initial_h"]
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I]),
                    helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]),
                    helper.make_tensor_value_info("initial_h", TensorProto.FLOAT,
                                                  [len(dirs), B, H])]
    outputs = ["Y", "Y_h"]
    if cell == "lstm":
        inputs.append("initial_c")
        graph_inputs.append(helper.make_tensor_value_info("initial_c", TensorProto.FLOAT,
                                                          [len(dirs), B, H]))
        outputs.append("Y_c")
        if peepholes:  # P[iof]
            P = np.stack([np.concatenate([p[f"layer0.{d}.{g}.peephole"]
                                          for g in ("input", "output", "forget")]) for d in dirs])
            inits.append(numpy_helper.from_array(P.astype(f32), "P"))
            inputs.append("P")
    else:
        attrs = dict(attrs, linear_before_reset=int(reset_after))
    node = helper.make_node(cell.upper(), inputs, outputs, hidden_size=H, direction=direction,
                            **attrs)
    shapes = {"Y": [T, len(dirs), B, H], "Y_h": [len(dirs), B, H], "Y_c": [len(dirs), B, H]}
    graph = helper.make_graph([node], "g", graph_inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, shapes[o])
                               for o in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def run_ort(model, x, lengths, state):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    feed = {"X": x.transpose(1, 0, 2).astype(np.float32), "sequence_lens": lengths.astype(np.int32),
            "initial_h": state[0].astype(np.float32)}
    if len(state) == 2:
        feed["initial_c"] = state[1].astype(np.float32)
    res = sess.run(None, feed)
    Y = res[0]  # [T, D, B, H] -> (B, T, D*H)
    T_, D, B_, H_ = Y.shape
    y = Y.transpose(2, 0, 1, 3).reshape(B_, T_, D * H_)
    return y, res[1:]


LSTM_ONNX_CASES = {
    # id: (direction, activations, alpha, beta, other attributes, peepholes)
    "hard_sigmoid_params": ("forward", ["HardSigmoid", "Tanh", "Tanh"], [0.3], [0.45], {}, False),
    "hard_sigmoid_defaults": ("forward", ["HardSigmoid", "Softsign", "Tanh"], [], [], {}, False),
    "leaky_scaled": ("reverse", ["Sigmoid", "LeakyRelu", "ScaledTanh"], [0.2, 0.9], [1.3], {},
                     False),
    "affine_softplus": ("forward", ["Affine", "Softsign", "Softplus"], [0.4], [0.5], {}, False),
    "elu_thresholded": ("forward", ["Sigmoid", "Elu", "ThresholdedRelu"], [0.7, 0.1], [], {},
                        False),
    "relu_elu_default": ("forward", ["Sigmoid", "Relu", "Elu"], [], [], {}, False),
    "clip": ("bidirectional", None, None, None, {"clip": 0.8}, False),
    "peepholes": ("bidirectional", None, None, None, {}, True),
    "input_forget": ("forward", None, None, None, {"input_forget": 1}, False),
    "input_forget_peepholes": ("reverse", None, None, None, {"input_forget": 1}, True),
    "per_direction": ("bidirectional", ["Sigmoid", "Tanh", "Tanh", "HardSigmoid", "Relu",
                                        "Softsign"], [0.25], [0.4], {"clip": 1.5}, True),
    # ONNX Runtime wants 6 functions for a bidirectional node (the schema's "3 (or 6)")
    "everything": ("bidirectional", ["HardSigmoid", "ScaledTanh", "Affine"] * 2,
                   [0.3, 0.8, 0.9, 0.2, 1.1, 0.5], [0.45, 1.2, 0.1, 0.5, 0.7, -0.2],
                   {"clip": 1.1, "input_forget": 1}, True),
}
GRU_ONNX_CASES = {
    "hard_sigmoid_relu": ("forward", ["HardSigmoid", "Relu"], [0.25], [0.4], {}),
    "softsign_leaky": ("reverse", ["Sigmoid", "LeakyRelu"], [0.3], [], {}),
    "clip": ("bidirectional", None, None, None, {"clip": 0.7}),
    "per_direction": ("bidirectional", ["Sigmoid", "Tanh", "HardSigmoid", "Elu"], [0.3, 0.6],
                      [0.45], {"clip": 2.0}),
    "scaled_affine": ("forward", ["Affine", "ScaledTanh"], [0.3, 1.1], [0.5, 0.8], {}),
}


def _onnx_check(cell, direction, names, alpha, beta, attrs, peepholes=False, reset_after=True,
                seed=0):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(seed)
    I, H, B, T = 3, 5, 4, 6
    dirs = ("forward", "backward") if direction == "bidirectional" else ("forward",)
    p = as_float32(random_params(rng, cell, I, H, dirs, peepholes=peepholes))
    attrs = dict(attrs)
    kw = {}
    if names is not None:
        attrs["activations"] = names
        if alpha:
            attrs["activation_alpha"] = alpha
        if beta:
            attrs["activation_beta"] = beta
        kw["activations"] = onnx_alpha_beta(names, alpha, beta)
    model = onnx_model(cell, p, I, H, B, T, direction, attrs, peepholes, reset_after)
    onnx.checker.check_model(model)
    x = rng.normal(0, 1.2, (B, T, I)).astype(np.float32).astype(np.float64)
    lengths = np.array([6, 2, 5, 1])
    mask = np.arange(T)[None, :] < lengths[:, None]
    D = len(dirs)
    state = [rng.normal(0, 0.5, (D, B, H)).astype(np.float32).astype(np.float64)
             for _ in range(2 if cell == "lstm" else 1)]
    y_ort, st_ort = run_ort(model, x, lengths, state)
    ref_y, ref_st = rnn_forward(
        cell, p, x, hidden_size=H, bidirectional=D == 2, reverse=direction == "reverse",
        reset_after=reset_after, mask=mask, masked_output="zero",
        initial_state=tuple(state) if cell == "lstm" else state[0],
        clip=attrs.get("clip"), peepholes=peepholes,
        input_forget=bool(attrs.get("input_forget", 0)), **kw)
    assert_allclose(y_ort, ref_y, rtol=1e-5, atol=1e-5)
    for a, b in zip(st_ort, ref_st if cell == "lstm" else (ref_st,)):
        assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    return p, x, mask, y_ort, ref_y


@pytest.mark.parametrize("case", list(LSTM_ONNX_CASES))
def test_lstm_vs_onnxruntime(case):
    direction, names, alpha, beta, attrs, peepholes = LSTM_ONNX_CASES[case]
    _onnx_check("lstm", direction, names, alpha, beta, attrs, peepholes, seed=len(case))


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("case", list(GRU_ONNX_CASES))
def test_gru_vs_onnxruntime(case, reset_after):
    direction, names, alpha, beta, attrs = GRU_ONNX_CASES[case]
    _onnx_check("gru", direction, names, alpha, beta, attrs, reset_after=reset_after,
                seed=len(case))


def test_onnxruntime_honours_input_forget_and_clip():
    """The variants are active in these cases: the plain cell differs from ONNX Runtime."""
    for attrs, peep in (({"input_forget": 1}, False), ({"input_forget": 1}, True),
                        ({"clip": 0.8}, False)):
        p, x, mask, y_ort, _ = _onnx_check("lstm", "forward", None, None, None, attrs, peep,
                                           seed=3)
        plain, _ = rnn_forward("lstm", p, x, hidden_size=5, mask=mask, peepholes=peep)
        assert np.abs(plain - y_ort).max() > 1e-2, attrs


def test_onnx_alpha_list_skips_functions_without_parameters():
    """Relu takes no alpha: the second HardSigmoid reads the list's second entry, not the
    third (how ONNX Runtime consumes activation_alpha)."""
    acts = onnx_alpha_beta(["HardSigmoid", "Relu", "HardSigmoid"], [0.1, 0.3], [0.4])
    assert acts == [("hard_sigmoid", 0.1, 0.4), ("relu", None, None),
                    ("hard_sigmoid", 0.3, 0.5)]
    _onnx_check("gru", "bidirectional", ["HardSigmoid", "Relu", "HardSigmoid", "Tanh"],
                [0.1, 0.3], [0.4], {}, seed=9)


# ---- Keras 3 -----------------------------------------------------------------------------------

KERAS_ACTIVATIONS = ["relu", "linear", "softsign", "elu", "hard_sigmoid", "sigmoid"]
KERAS_RECURRENT = ["hard_sigmoid", "sigmoid", "relu"]


@pytest.fixture(scope="module")
def keras():
    keras = pytest.importorskip("keras")
    if not keras.__version__.startswith("3."):
        pytest.skip(f"needs Keras 3, found {keras.__version__}")
    return keras


def _keras_weights(cell, p, reset_after):
    order = GATES[cell]
    pre = "layer0.forward."
    K = np.concatenate([p[pre + g + ".kernel"] for g in order], axis=1)
    R = np.concatenate([p[pre + g + ".recurrent"] for g in order], axis=1)
    b = np.concatenate([p[pre + g + ".bias"] for g in order])
    if cell == "gru":
        rb = np.concatenate([p.get(pre + g + ".recurrent_bias", np.zeros(len(b) // 3))
                             for g in order])
        b = np.stack([b, rb]) if reset_after else b + rb
    return [w.astype(np.float32) for w in (K, R, b)]


@pytest.mark.parametrize("cell,reset_after", [("lstm", True), ("gru", True), ("gru", False)])
@pytest.mark.parametrize("activation,recurrent_activation",
                         list(itertools.product(KERAS_ACTIVATIONS, KERAS_RECURRENT)))
def test_keras3_activations(keras, cell, reset_after, activation, recurrent_activation):
    rng = np.random.default_rng(len(activation) * 7 + len(recurrent_activation))
    I, H, B, T = 3, 4, 3, 6
    p = random_params(rng, cell, I, H, scale=0.9)
    if cell == "gru" and not reset_after:  # Keras keeps one bias: fold the recurrent one in
        for g in GATES["gru"]:
            key = f"layer0.forward.{g}"
            p[key + ".bias"] = p[key + ".bias"] + p.pop(key + ".recurrent_bias")
    p = as_float32(p)
    extra = {} if cell == "lstm" else {"reset_after": reset_after}
    layer = (keras.layers.LSTM if cell == "lstm" else keras.layers.GRU)(
        H, return_sequences=True, activation=activation,
        recurrent_activation=recurrent_activation, **extra)
    layer.build((None, T, I))
    layer.set_weights(_keras_weights(cell, p, reset_after))
    x = rng.normal(0, 1.5, (B, T, I)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1]], bool)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*__array__")
        y = layer(x, mask=mask)
    y = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)
    ref, _ = rnn_forward(cell, p, x.astype(np.float64), hidden_size=H, mask=mask,
                         masked_output="carry", reset_after=reset_after, activation=activation,
                         recurrent_activation=recurrent_activation, hard_sigmoid="keras3")
    scale = max(1.0, np.abs(ref).max())
    assert_allclose(y, ref, rtol=1e-5, atol=2e-6 * scale)


def test_keras3_hard_sigmoid_is_not_keras2s(keras):
    """Keras 3's hard_sigmoid is x / 6 + 0.5: the Keras 2 reading (0.2 x + 0.5) differs."""
    rng = np.random.default_rng(4)
    I, H, B, T = 3, 4, 2, 5
    p = as_float32(random_params(rng, "lstm", I, H, scale=1.5))
    layer = keras.layers.LSTM(H, return_sequences=True, recurrent_activation="hard_sigmoid")
    layer.build((None, T, I))
    layer.set_weights(_keras_weights("lstm", p, True))
    x = rng.normal(0, 2.0, (B, T, I)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*__array__")
        y = layer(x)
    y = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)
    k3, _ = rnn_forward("lstm", p, x, hidden_size=H, recurrent_activation="hard_sigmoid")
    k2, _ = rnn_forward("lstm", p, x, hidden_size=H, recurrent_activation="hard_sigmoid",
                        hard_sigmoid="keras2")
    assert_allclose(y, k3, rtol=1e-5, atol=2e-6)
    assert np.abs(y - k2).max() > 1e-2
