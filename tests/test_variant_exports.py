"""Exports never change a variant cell's meaning silently: each format either writes a file that
loads back into a layer with the same outputs, or refuses with an error naming the feature it
cannot hold."""
import importlib.util

import numpy as np
import pytest

import fastrnn
from test_variants import randomize_peepholes

LAYERS = {
    "peepholes": lambda: fastrnn.LSTM(4, 6, peepholes=True, seed=0),
    "clip": lambda: fastrnn.GRU(4, 6, clip=0.5, seed=0),
    "cell_clip": lambda: fastrnn.LSTM(4, 6, cell_clip=0.3, seed=0),
    "input_forget": lambda: fastrnn.LSTM(4, 6, input_forget=True, bidirectional=True, seed=0),
    "activations": lambda: fastrnn.LSTM(4, 6, activation="relu",
                                        recurrent_activation="hard_sigmoid", seed=0),
    "onnx_activations": lambda: fastrnn.GRU(4, 6, activations=[("LeakyRelu", 0.2), "Softsign"],
                                            seed=0),
    "proj_size": lambda: fastrnn.LSTM(4, 6, proj_size=3, num_layers=2, seed=0),
    "proj_clip": lambda: fastrnn.LSTM(4, 6, proj_size=3, proj_clip=0.05, seed=0),
}
FORMATS = {"npz": [], "frnn": [], "torch": ["torch"], "safetensors": [], "onnx": ["onnx"]}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("key", LAYERS)
def test_export_round_trips_or_refuses(fmt, key, tmp_path):
    for module in FORMATS[fmt]:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    layer = randomize_peepholes(LAYERS[key]())
    path = tmp_path / f"layer.{fmt}"
    try:
        fastrnn.save(layer, path, format=fmt)
    except ValueError as exc:
        named = [f for f in layer.variant_features if f in str(exc)]
        assert named, f"{fmt} refused {key} without naming the feature: {exc}"
        return
    again = fastrnn.load(path)
    x = np.random.default_rng(2).normal(size=(3, 5, 4)).astype(np.float32)
    got, want = again(x)[0], layer(x)[0]
    assert again.variant_features == layer.variant_features, (fmt, again)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_npz_round_trip_is_exact_for_every_variant(tmp_path):
    for key, make in LAYERS.items():
        layer = randomize_peepholes(make())
        layer.save(tmp_path / f"{key}.npz")
        again = fastrnn.load(tmp_path / f"{key}.npz")
        assert again.activations == layer.activations and repr(again) == repr(layer)
        x = np.random.default_rng(3).normal(size=(2, 4, 4)).astype(np.float32)
        np.testing.assert_array_equal(again(x)[0], layer(x)[0])


def test_npz_variant_file_is_version_2_and_plain_stays_version_1(tmp_path):
    import json
    fastrnn.LSTM(2, 3).save(tmp_path / "plain.npz")
    fastrnn.LSTM(2, 3, clip=1.0).save(tmp_path / "variant.npz")
    for name, version in (("plain", 1), ("variant", 2)):
        with np.load(tmp_path / f"{name}.npz", allow_pickle=False) as z:
            assert json.loads(str(z["__config__"]))["version"] == version


def test_cudnn_layout_refuses_variants():
    from fastrnn.io.cudnn import to_cudnn
    with pytest.raises(ValueError, match="peepholes"):
        to_cudnn(fastrnn.LSTM(2, 3, peepholes=True))


def test_inspect_describes_the_variant():
    from fastrnn.io._common import describe
    line = describe(fastrnn.LSTM(3, 8, proj_size=4, peepholes=True, clip=2.0,
                                 activations=[("HardSigmoid", 0.2, 0.5), "relu", "tanh"]))
    for part in ("activations=[hard_sigmoid(0.2, 0.5), relu, tanh]", "clip=2.0", "peepholes",
                 "proj_size=4"):
        assert part in line, line
    assert "peepholes" not in describe(fastrnn.LSTM(3, 8))


def test_keras_weight_list_refuses_or_warns():
    with pytest.raises(ValueError, match="peepholes"):
        fastrnn.LSTM(2, 3, peepholes=True).to_keras()
    with pytest.raises(ValueError, match="proj_size"):
        fastrnn.LSTM(2, 3, proj_size=2).to_keras()
    with pytest.warns(UserWarning, match="relu"):
        weights = fastrnn.GRU(2, 3, activation="relu").to_keras()
    assert len(weights) == 3
    assert len(fastrnn.GRU(2, 3).to_keras()) == 3  # the plain cell: no warning (warnings are errors)
