"""fastrnn's own `.npz` format: the layer's state_dict plus a JSON config entry.

Members: one array per state_dict key ("layer0.forward.input.kernel", ...) and `__config__`, a
unicode scalar holding JSON {"format": "fastrnn-npz", "version": 1, "cell", "input_size", ...}
with every constructor setting (name, masked_output, reverse, dropout, ...) and "trainable"
(absent in older files: true).
A layer with a cell variant (docs/variants.md) is written as version 2, whose config adds
"variant": the keywords of `layer.variant_config()`; an older reader then refuses the file
instead of building the plain cell. A quantized layer (`layer.quantize("int8")`) is written as
version 3 with "quantization": "int8" in its config and the arrays of its state_dict (int8
"kernel" / "recurrent" with float32 "kernel_scale" / "recurrent_scale" per gate): an older
reader refuses it rather than taking int8 values for float weights. A bf16 layer is written
the same way with "quantization": "bf16" and float32 arrays holding its bfloat16 weights. Read with np.load(allow_pickle=False): a file can never run
code.
"""
import io
import json

import numpy as np

from ._common import build, build_int8, read_source

CONFIG_KEY = "__config__"
FORMAT = "fastrnn-npz"
VERSION = 1
VARIANT_VERSION = 2  # files whose cell has variants
QUANTIZED_VERSION = 3  # files of int8 layers
_VARIANT_KEYS = {"activations", "clip", "cell_clip", "peepholes", "input_forget", "proj_size",
                 "proj_clip"}
_KEYS = ("input_size", "hidden_size", "num_layers", "bidirectional", "use_bias", "reverse",
         "dropout", "recurrent_dropout", "masked_output", "name")


def layer_config(layer):
    """The constructor arguments that define a layer (JSON-serialisable)."""
    config = {k: getattr(layer, k) for k in _KEYS}
    config["cell"] = layer._cell
    config["dtype"] = layer.dtype.name
    if layer._cell == "gru":
        config["reset_after"] = layer.reset_after
    variant = layer.variant_config()
    if variant:
        config["variant"] = variant
    if not layer.trainable and not layer.quantization:  # written only when off
        config["trainable"] = False
    if layer.quantization:
        config["quantization"] = layer.quantization
    return config


def save_npz(layer, path):
    """Write `layer` (fastrnn.LSTM / GRU) to `path` as a fastrnn .npz file (every setting and
    weight: it reloads as the same layer)."""
    config = layer_config(layer)
    version = QUANTIZED_VERSION if "quantization" in config else \
        VARIANT_VERSION if "variant" in config else VERSION
    config = dict(format=FORMAT, version=version, **config)
    arrays = layer.state_dict()
    arrays[CONFIG_KEY] = np.array(json.dumps(config))
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a path
        np.savez(f, **arrays)


def load_npz(path_or_bytes, *, dtype=None):
    """The layer of a fastrnn .npz file (path or bytes); `dtype` overrides the file's.
    Raises ValueError for a file that is not one or whose config is malformed."""
    data, label = read_source(path_or_bytes)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled member), EOFError ...
        raise ValueError(f"{label}: not a readable fastrnn .npz file ({exc})") from exc
    if CONFIG_KEY not in arrays:
        raise ValueError(f"{label}: no {CONFIG_KEY} entry; not a fastrnn .npz file")
    try:
        config = json.loads(str(arrays.pop(CONFIG_KEY)))
    except ValueError as exc:
        raise ValueError(f"{label}: {CONFIG_KEY} is not valid JSON") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{label}: {CONFIG_KEY} does not describe a {FORMAT} file")
    if config.get("version") not in (VERSION, VARIANT_VERSION, QUANTIZED_VERSION):
        raise ValueError(f"{label}: {FORMAT} version {config.get('version')} is not supported "
                         f"(this fastrnn reads versions {VERSION} to {QUANTIZED_VERSION})")
    quantization = config.get("quantization") if config["version"] == QUANTIZED_VERSION else None
    if config["version"] == QUANTIZED_VERSION and quantization not in ("int8", "bf16"):
        raise ValueError(f"{label}: {CONFIG_KEY} 'quantization' must be \"int8\" or \"bf16\", "
                         f"got {quantization!r:.80}")
    cell = config.pop("cell", None)
    if cell not in ("lstm", "gru"):
        raise ValueError(f"{label}: unknown cell {cell!r}")
    kwargs = {k: config[k] for k in _KEYS if k in config}
    if cell == "gru":
        kwargs["reset_after"] = config.get("reset_after", True)
    variant = config.get("variant", {}) if config["version"] >= VARIANT_VERSION else {}
    if not isinstance(variant, dict) or not set(variant) <= _VARIANT_KEYS:
        raise ValueError(f"{label}: {CONFIG_KEY} has a malformed 'variant' entry")
    kwargs.update(variant)
    missing = [k for k in ("input_size", "hidden_size") if k not in kwargs]
    if missing:
        raise ValueError(f"{label}: config lacks {missing}")
    name = kwargs.get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{label}: {CONFIG_KEY} 'name' must be a string or null, got "
                         f"{type(name).__name__}")
    trainable = config.get("trainable", True)
    if not isinstance(trainable, bool):
        raise ValueError(f"{label}: {CONFIG_KEY} 'trainable' must be true or false, got "
                         f"{trainable!r:.80}")
    input_size, hidden_size = kwargs.pop("input_size"), kwargs.pop("hidden_size")
    if quantization == "int8":
        return build_int8(label, cell, input_size, hidden_size, arrays, **kwargs)
    if quantization == "bf16":  # float32 arrays of bfloat16 values: rounding them is exact
        return build(cell, input_size, hidden_size, arrays, dtype="float32",
                     **kwargs).quantize("bf16")
    layer = build(cell, input_size, hidden_size, arrays,
                  dtype=dtype or config.get("dtype"), **kwargs)
    layer.trainable = trainable
    return layer


def all_weights(path_or_bytes):
    """The weights of a fastrnn .npz file as the layer's state_dict(): a dict
    "layer0.forward.input.kernel" -> np.ndarray (a .npz file holds one layer and nothing
    else).

    Example:
        >>> from fastrnn.io.npz import all_weights
        >>> sorted(all_weights("gru.npz"))[:2]  # doctest: +SKIP
        ['layer0.forward.candidate.bias', 'layer0.forward.candidate.kernel']
    """
    return load_npz(path_or_bytes).state_dict()
