"""Keras 3 and Keras 2 (tf.keras): layer objects, `.keras`, `.weights.h5`, legacy `.h5`.

Layout: `get_weights()` of LSTM / GRU is [kernel (I, G*H), recurrent_kernel (H, G*H), bias];
column blocks LSTM i,f,c,o and GRU z,r,h; GRU bias is (2, 3H) = [input; recurrent] with
reset_after=True and (3H,) with reset_after=False. Bidirectional gives forward then backward.
Keras-2 CuDNNLSTM / CuDNNGRU store each gate block as cuDNN's row-major (H, I) matrix poured into
the (I, H) block, transposed recurrent blocks and a bias [b_W(all gates), b_R(all gates)].

Semantics carried over from the saved config: activation / recurrent_activation (tanh, sigmoid,
hard_sigmoid, relu, linear, softsign, elu; see "hard_sigmoid" below), reset_after, go_backwards (-> reverse=True; note Keras returns a go_backwards layer's outputs in
processing order, i.e. flipped in time, while fastrnn keeps original time order), use_bias and
masking (a plain layer copies the previous output at masked steps: masked_output="carry", unless
its config says zero_output_for_mask; Bidirectional forces zeros: masked_output="zero").

HDF5 files are read through h5py/libhdf5, which can loop forever on some deliberately corrupted
files (damage in a `.keras` zip is caught by the zip's CRC first); read untrusted bare `.h5` files
in a subprocess with a timeout.

`.weights.h5` files carry no config: the cell type, sizes, use_bias and reset_after come from
the variables, and the other options take Keras' defaults (no go_backwards, tanh/sigmoid).

hard_sigmoid: a config names the function, and its meaning depends on the Keras that wrote the
file. Keras 1 / 2 (standalone keras 2.x, tf.keras in TensorFlow <= 2.15, tf_keras) define it as
clip(0.2 x + 0.5, 0, 1) (`hard_sigmoid="keras2"`); Keras 3 as relu6(x + 3) / 6 =
clip(x / 6 + 0.5, 0, 1) (`"keras3"`). The writer's version is read from `metadata.json`
`keras_version` in a `.keras` zip (tf.keras 2.13-2.15 wrote `.keras` files too), from the root
attribute `keras_version` of an `.h5` file (or of its /model_weights group), and from the package
that defines a live layer object. When no version is recorded: a legacy `.h5` is taken as Keras 2
(Keras 3 always records its version there), a `.keras` zip as Keras 3 (its native format).
"""
import io
import json
import zipfile
import zlib

import numpy as np

from ._isolated import in_child, parse_keras_bytes
from ._common import (DIRECTIONS, as_array, build, read_source, require,
                      single_or_dict, split_columns)

GATE_ORDER = {"lstm": ("input", "forget", "cell", "output"),   # Keras i, f, c, o
              "gru": ("update", "reset", "candidate")}         # Keras z, r, h
_RNN_CLASSES = {"LSTM": "lstm", "GRU": "gru", "CuDNNLSTM": "lstm", "CuDNNGRU": "gru",
                "LSTMV1": "lstm", "GRUV1": "gru"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# Config + weights -> layer

# Keras activation names fastrnn runs (docs/variants.md); Keras' own parameters: elu alpha 1.0.
KERAS_ACTIVATIONS = ("tanh", "sigmoid", "hard_sigmoid", "relu", "linear", "softsign", "elu")


def _activation_name(value):
    if isinstance(value, dict):  # {"class_name": "function", "config": "tanh"} style
        value = value.get("config", value.get("class_name"))
        if isinstance(value, dict):
            value = value.get("name")
    if value is None:  # Keras: activation=None is the identity
        value = "linear"
    return value


def _checked_activation(value, what, label):
    name = _activation_name(value)
    if not isinstance(name, str) or name not in KERAS_ACTIVATIONS:
        raise ValueError(f"{label}: {what}={name!r} is not supported; fastrnn reads the Keras "
                         f"activations {', '.join(KERAS_ACTIVATIONS)}")
    return name


def hard_sigmoid_flavour(keras_version, default):
    """"keras2" or "keras3": what the name hard_sigmoid means for a file written by
    `keras_version` (a version string, or None when the file records none: `default`)."""
    if isinstance(keras_version, bytes):
        keras_version = keras_version.decode("utf-8", "replace")
    if keras_version is None or not str(keras_version).strip():
        return default
    major = str(keras_version).strip().split(".")[0]
    if not major.isdigit():
        return default
    return "keras2" if int(major) <= 2 else "keras3"


def _sub_layer(class_name, config, label):
    """(cell, cudnn, options) of a Keras LSTM / GRU config; unsupported options raise."""
    if class_name not in _RNN_CLASSES:
        raise ValueError(f"{label}: {class_name} is not a supported recurrent layer "
                         "(LSTM, GRU, CuDNNLSTM, CuDNNGRU, Bidirectional)")
    cell = _RNN_CLASSES[class_name]
    cudnn = class_name.startswith("CuDNN")
    act = _checked_activation(config.get("activation", "tanh"), "activation", label)
    rec = _checked_activation(config.get("recurrent_activation", "sigmoid"),
                              "recurrent_activation", label)
    if cudnn and (act, rec) != ("tanh", "sigmoid"):
        raise ValueError(f"{label}: {class_name} with activation={act!r}, recurrent_activation="
                         f"{rec!r}: cuDNN layers only run tanh / sigmoid")
    if config.get("time_major"):
        raise ValueError(f"{label}: time_major=True is not supported")
    if config.get("stateful"):
        raise ValueError(f"{label}: stateful=True is not supported; pass the state explicitly")
    options = dict(reverse=bool(config.get("go_backwards", False)),
                   zero_output=bool(config.get("zero_output_for_mask", False)),
                   use_bias=config.get("use_bias", True),
                   dropout=float(config.get("dropout", 0.0)),
                   recurrent_dropout=float(config.get("recurrent_dropout", 0.0)),
                   activation=act, recurrent_activation=rec)
    if cell == "gru":
        options["reset_after"] = True if cudnn else config.get("reset_after", True)
    return cell, cudnn, options


def _direction_weights(cell, cudnn, options, arrays, prefix, label, sd):
    """Canonical weights of one direction from its get_weights() arrays; returns (I, H)."""
    arrays = [as_array(a, f"{label} weight") for a in arrays]
    n = 3 if options["use_bias"] else 2
    if len(arrays) != n:
        raise ValueError(f"{label}: expected {n} weight arrays (kernel, recurrent_kernel"
                         f"{', bias' if n == 3 else ''}), got {len(arrays)}")
    K, Rk = arrays[0], arrays[1]
    G = len(GATE_ORDER[cell])
    if Rk.ndim != 2 or Rk.shape[1] != G * Rk.shape[0]:
        raise ValueError(f"{label}: recurrent_kernel has shape {Rk.shape}, expected (H, {G}*H) "
                         f"for a {cell.upper()} ({G} gates)")
    H = Rk.shape[0]
    if K.ndim != 2 or K.shape[1] != G * H:
        raise ValueError(f"{label}: kernel has shape {K.shape}, expected (input_size, {G * H})")
    I = K.shape[0]
    b_w = b_r = None
    if options["use_bias"]:
        b = arrays[2]
        if cudnn:
            if b.shape != (2 * G * H,):
                raise ValueError(f"{label}: CuDNN bias has shape {b.shape}, expected "
                                 f"({2 * G * H},)")
            b_w, b_r = b[:G * H], b[G * H:]
        elif cell == "gru" and options["reset_after"]:
            if b.shape != (2, G * H):
                raise ValueError(f"{label}: GRU(reset_after=True) bias has shape {b.shape}, "
                                 f"expected (2, {G * H})")
            b_w, b_r = b[0], b[1]
        else:
            if b.shape != (G * H,):
                what = "GRU(reset_after=False)" if cell == "gru" else "LSTM"
                raise ValueError(f"{label}: {what} bias has shape {b.shape}, expected "
                                 f"({G * H},)")
            b_w = b
    if cudnn:  # undo the cuDNN storage of each gate block (see module docstring)
        K = np.concatenate([K[:, g * H:(g + 1) * H].reshape(H, I).T for g in range(G)], axis=1)
        Rk = np.concatenate([Rk[:, g * H:(g + 1) * H].T for g in range(G)], axis=1)
    split_columns(cell, GATE_ORDER[cell], K, Rk, b_w, b_r, H, prefix, sd)
    return I, H


def _activation_keywords(directions, hard_sigmoid):
    """Constructor keywords for the activations of the sub-layer options of each direction."""
    pairs = [(o["recurrent_activation"], o["activation"]) for o in directions]
    kw = {}
    if len(set(pairs)) == 1:
        rec, act = pairs[0]
        if act != "tanh":
            kw["activation"] = act
        if rec != "sigmoid":
            kw["recurrent_activation"] = rec
    else:  # a Bidirectional whose halves differ: the ONNX per-direction form
        cell_slots = len(directions[0]["slots"])
        kw["activations"] = [a for o in directions for a in o["slots"][:cell_slots]]
    if any("hard_sigmoid" in pair for pair in pairs):
        kw["hard_sigmoid"] = hard_sigmoid
    return kw


def layer_from_config(class_name, config, arrays, *, name=None, dtype=None, label="keras",
                      hard_sigmoid="keras3"):
    """A fastrnn layer from a Keras layer's class name, config and get_weights() list.

    `hard_sigmoid` ("keras3" or "keras2") is what the name hard_sigmoid means in the config:
    it depends on the Keras version that wrote it (module docstring)."""
    label = f"{label}: layer {name!r}" if name else label
    sd = {}
    if class_name == "Bidirectional":
        merge = config.get("merge_mode", "concat")
        if merge != "concat":
            raise ValueError(f"{label}: Bidirectional merge_mode={merge!r} is not supported "
                             "(only 'concat')")
        fwd = config["layer"]
        bwd = config.get("backward_layer") or fwd
        f_cell, f_cudnn, f_opt = _sub_layer(fwd["class_name"], fwd["config"], label)
        b_cell, b_cudnn, b_opt = _sub_layer(bwd["class_name"], bwd["config"], label)
        if f_cell != b_cell or f_opt.get("reset_after") != b_opt.get("reset_after") \
                or f_opt["use_bias"] != b_opt["use_bias"] or f_opt["reverse"]:
            raise ValueError(f"{label}: Bidirectional with differing or go_backwards forward "
                             "layers is not supported")
        half = len(arrays) // 2
        I, H = _direction_weights(f_cell, f_cudnn, f_opt, arrays[:half], "layer0.forward",
                                  label, sd)
        I2, H2 = _direction_weights(b_cell, b_cudnn, b_opt, arrays[half:], "layer0.backward",
                                    label, sd)
        if (I, H) != (I2, H2):
            raise ValueError(f"{label}: forward and backward layers differ in size")
        opts = dict(bidirectional=True, masked_output="zero", use_bias=f_opt["use_bias"],
                    dropout=f_opt["dropout"], recurrent_dropout=f_opt["recurrent_dropout"])
        cell = f_cell
        for o in (f_opt, b_opt):
            o["slots"] = (o["recurrent_activation"], o["activation"], o["activation"])[
                :3 if cell == "lstm" else 2]
        opts.update(_activation_keywords([f_opt, b_opt], hard_sigmoid))
        if cell == "gru":
            opts["reset_after"] = f_opt["reset_after"]
    else:
        cell, cudnn, opt = _sub_layer(class_name, config, label)
        I, H = _direction_weights(cell, cudnn, opt, arrays, "layer0.forward", label, sd)
        opts = dict(reverse=opt["reverse"], use_bias=opt["use_bias"],
                    masked_output="zero" if opt["zero_output"] or cudnn else "carry",
                    dropout=opt["dropout"], recurrent_dropout=opt["recurrent_dropout"])
        opts.update(_activation_keywords([opt], hard_sigmoid))
        if cell == "gru":
            opts["reset_after"] = opt["reset_after"]
    return build(cell, I, H, sd, dtype=dtype, name=name, **opts)


# ---------------------------------------------------------------------------------------------
# Entry point

def from_keras(source, name=None, *, dtype=None):
    """Layer(s) from a Keras layer or model object, or a `.keras` / `.weights.h5` / `.h5` file
    (path or bytes). Several recurrent layers give a dict user-name -> layer in model order;
    `name` picks one."""
    if hasattr(source, "get_config") and hasattr(source, "get_weights"):
        return single_or_dict(_from_objects(source, dtype), name, "Keras model")
    data, label = read_source(source)
    if data[:4] != b"PK\x03\x04" and data[:8] != _HDF5_SIGNATURE:
        raise ValueError(f"{label}: not a Keras file (neither a .keras zip nor HDF5)")
    require("h5py", "keras")
    # libhdf5 may loop forever on a damaged file: parse in a child process with a time limit.
    layers = _parse_bytes(data, label, dtype) if in_child() else \
        parse_keras_bytes(data, label, None if dtype is None else np.dtype(dtype).name)
    return single_or_dict(layers, name, label)


def _parse_bytes(data, label, dtype):
    """{user name: layer} from `.keras` zip or HDF5 bytes, in this process."""
    try:
        if data[:4] == b"PK\x03\x04":
            return _from_keras_zip(data, label, dtype)
        return _from_h5(data, label, dtype)
    except (OSError, RuntimeError, KeyError) as exc:  # h5py's errors for damaged structures
        raise ValueError(f"{label}: damaged Keras/HDF5 file ({type(exc).__name__}: {exc})"
                         ) from exc


def _object_flavour(layer):
    """hard_sigmoid flavour of a live layer object: from the version of the package defining it
    (keras 3, or Keras 2: standalone keras 2.x, tf_keras, tensorflow.python.keras)."""
    import sys
    top = type(layer).__module__.split(".")[0]
    if top == "tensorflow":  # tf.keras inside TensorFlow <= 2.15 (tensorflow.python.keras ...)
        return "keras2" if "keras" in type(layer).__module__ else "keras3"
    version = getattr(sys.modules.get(top), "__version__", None)
    return hard_sigmoid_flavour(version, "keras3")


def _from_objects(obj, dtype):
    layers = {}
    members = obj.layers if hasattr(obj, "layers") and type(obj).__name__ not in \
        ("Bidirectional",) else [obj]
    for layer in members:
        cls = type(layer).__name__
        if cls in _RNN_CLASSES or cls == "Bidirectional":
            config = layer.get_config()
            if cls == "Bidirectional" and "layer" not in config:
                raise ValueError(f"Keras layer {layer.name!r}: Bidirectional config has no "
                                 "'layer' entry")
            # the variables' backend values: get_weights() warns under numpy 2 on some backends
            weights = [getattr(w, "value", w) for w in layer.weights]
            layers[layer.name] = layer_from_config(cls, config, weights, name=layer.name,
                                                   dtype=dtype,
                                                   hard_sigmoid=_object_flavour(layer))
        elif hasattr(layer, "layers") and layer is not obj:
            layers.update(_from_objects(layer, dtype))
    if not layers and type(obj).__name__ in ("RNN",):
        raise ValueError("keras.layers.RNN wrappers are not supported; use LSTM / GRU layers")
    return layers


def _config_layers(model_config):
    """[(class_name, config)] of a saved model config, in model order (nested models flattened)."""
    out = []
    if not isinstance(model_config, dict):
        return out
    cfg = model_config.get("config", {})
    entries = cfg.get("layers", []) if isinstance(cfg, dict) else cfg
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        cls, conf = entry.get("class_name"), entry.get("config", {})
        if cls in ("Sequential", "Functional", "Model"):
            out += _config_layers(entry)
        else:
            out.append((cls, conf))
    return out


def _h5(data, label):
    h5py = require("h5py", "keras")
    try:
        return h5py.File(io.BytesIO(data), "r")
    except OSError as exc:
        raise ValueError(f"{label}: unreadable HDF5 file ({exc})") from exc


def _read(ds, label, what):
    import h5py
    if not isinstance(ds, h5py.Dataset):
        raise ValueError(f"{label}: {what} is not a dataset")
    try:
        return np.asarray(ds[()])
    except OSError as exc:
        raise ValueError(f"{label}: cannot read {what} (truncated file?)") from exc


def _from_keras_zip(data, label, dtype):
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        config = json.loads(z.read("config.json"))
        weights = z.read("model.weights.h5")
        metadata = json.loads(z.read("metadata.json")) if "metadata.json" in z.namelist() \
            else {}
    except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, EOFError, NotImplementedError,
            OSError) as exc:
        raise ValueError(f"{label}: not a readable .keras file ({exc})") from exc
    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    flavour = hard_sigmoid_flavour(version if isinstance(version, str) else None, "keras3")
    configs = {c.get("name"): (cls, c) for cls, c in _config_layers(config)}
    if not configs and config.get("class_name") in _RNN_CLASSES:  # a bare layer saved alone
        configs = {config["config"].get("name"): (config["class_name"], config["config"])}
    with _h5(weights, label) as f:
        return _from_layers_group(f, label, dtype, configs, flavour)


def _vars(group, label, what):
    """Arrays in a Keras 3 `vars` group, in creation order (0, 1, 2)."""
    if group is None:
        return []
    keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
    return [_read(group[k], label, f"{what}/{k}") for k in keys]


def _from_layers_group(f, label, dtype, configs, flavour="keras3"):
    """Keras 3 weights file (`.weights.h5` or inside `.keras`): /layers/<group>/..."""
    root = f.get("layers")
    if root is None:
        raise ValueError(f"{label}: no /layers group; not a Keras 3 weights file")
    layers = {}
    for key in root.keys():  # h5py lists groups in name order; reorder by config below
        g = root[key]
        vars_attr = g.get("vars")
        user = vars_attr.attrs.get("name", key) if vars_attr is not None else key
        user = user.decode() if isinstance(user, bytes) else str(user)
        if "forward_layer" in g and "backward_layer" in g:
            arrays = _vars(g["forward_layer"].get("cell/vars"), label, f"{key}/forward_layer") + \
                _vars(g["backward_layer"].get("cell/vars"), label, f"{key}/backward_layer")
            default_cls = "Bidirectional"
        elif "cell" in g and "vars" in g["cell"]:
            arrays = _vars(g["cell/vars"], label, key)
            default_cls = None
        else:
            continue
        if user in configs:
            cls, conf = configs[user]
        else:
            cls, conf = _infer_config(g, arrays, default_cls, label, key)
        layers[user] = layer_from_config(cls, conf, arrays, name=user, dtype=dtype, label=label,
                                         hard_sigmoid=flavour)
    order = list(configs)
    return dict(sorted(layers.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order
                       else len(order)))


def _infer_config(g, arrays, default_cls, label, key):
    """A config for a weights-only file: cell from the variables, everything else default."""
    def cell_of(group):
        name = group.get("cell/vars").attrs.get("name", "") if "cell/vars" in group else ""
        name = name.decode() if isinstance(name, bytes) else str(name)
        if "lstm" in name:
            return "LSTM"
        if "gru" in name:
            return "GRU"
        raise ValueError(f"{label}: cannot tell the cell type of layer group {key!r}")

    def sub(cls, arrs):
        conf = {"use_bias": len(arrs) >= 3}
        if cls == "GRU":
            conf["reset_after"] = len(arrs) >= 3 and arrs[2].ndim == 2
        return conf

    if default_cls == "Bidirectional":
        cls = cell_of(g["forward_layer"])
        half = len(arrays) // 2
        return "Bidirectional", {"layer": {"class_name": cls, "config": sub(cls, arrays[:half])},
                                 "merge_mode": "concat"}
    cls = cell_of(g)
    return cls, sub(cls, arrays)


def _attr_list(value):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value)] \
        if value is not None and np.size(value) else []


def _from_h5(data, label, dtype):
    with _h5(data, label) as f:
        if "layers" in f and "layer_names" not in f.attrs and "model_weights" not in f:
            return _from_layers_group(f, label, dtype, {})
        root = f["model_weights"] if "model_weights" in f else f
        version = f.attrs.get("keras_version", root.attrs.get("keras_version"))
        if isinstance(version, np.ndarray) and version.size == 1:
            version = version.item()
        flavour = hard_sigmoid_flavour(version if isinstance(version, (str, bytes)) else None,
                                       "keras2")
        model_config = f.attrs.get("model_config")
        configs = {}
        if model_config is not None:
            if isinstance(model_config, bytes):
                model_config = model_config.decode()
            try:
                configs = {c.get("name"): (cls, c)
                           for cls, c in _config_layers(json.loads(model_config))}
            except ValueError as exc:
                raise ValueError(f"{label}: model_config is not valid JSON") from exc
        names = _attr_list(root.attrs.get("layer_names"))
        if not names:
            raise ValueError(f"{label}: no layer_names attribute; not a Keras weights file")
        layers = {}
        for lname in names:
            if lname not in root:
                raise ValueError(f"{label}: layer {lname!r} is listed but has no weights group")
            g = root[lname]
            wnames = _attr_list(g.attrs.get("weight_names"))
            if not wnames:
                continue
            arrays = []
            for wn in wnames:
                if wn not in g:
                    raise ValueError(f"{label}: layer {lname!r} lacks its weight {wn!r}")
                arrays.append(_read(g[wn], label, f"{lname}/{wn}"))
            if lname in configs:
                cls, conf = configs[lname]
            else:
                cls, conf = _infer_legacy(wnames, arrays)
                if cls is None:
                    continue
            if cls not in _RNN_CLASSES and cls != "Bidirectional":
                continue
            layers[lname] = layer_from_config(cls, conf, arrays, name=lname, dtype=dtype,
                                              label=label, hard_sigmoid=flavour)
        return layers


def _infer_legacy(wnames, arrays):
    """(class name, config) of a legacy layer from its weight names (no model_config)."""
    joined = " ".join(wnames)
    if "cudnn_lstm" in joined:
        cls = "CuDNNLSTM"
    elif "cudnn_gru" in joined:
        cls = "CuDNNGRU"
    elif "lstm_cell" in joined:
        cls = "LSTM"
    elif "gru_cell" in joined:
        cls = "GRU"
    else:
        return None, None
    bidir = any("/forward_" in w for w in wnames) and any("/backward_" in w for w in wnames)
    arrs = arrays[:len(arrays) // 2] if bidir else arrays
    conf = {"use_bias": len(arrs) >= 3}
    if cls == "GRU":
        conf["reset_after"] = len(arrs) >= 3 and arrs[2].ndim == 2
    if bidir:
        return "Bidirectional", {"layer": {"class_name": cls, "config": conf}}
    return cls, conf


# ---------------------------------------------------------------------------------------------
# Export

def to_keras(layer):
    """Keras `get_weights()` list: [kernel, recurrent_kernel, bias] per direction (forward then
    backward, as Bidirectional), for each stacked layer in turn. A GRU with reset_after=False
    gets its recurrent biases folded into the (3H,) bias (they act outside the reset there).

    Keras layers have no peepholes, clips, coupled gates or projection: such a layer is
    refused. Non-default activations are not part of a weight list: a UserWarning names the
    `activation` / `recurrent_activation` to give the Keras layer that receives the weights."""
    blocked = [f for f in layer.variant_features if f != "activations"]
    if blocked:
        raise ValueError(f"Keras' {layer._cell.upper()} has no {', '.join(blocked)}: "
                         f"{layer!r} cannot be represented")
    if layer.variant_features:
        import warnings
        warnings.warn(f"{layer!r}: the weights do not carry the activations; build the Keras "
                      f"layer with the same activation / recurrent_activation "
                      f"{layer.activations[0]}", UserWarning, stacklevel=2)
    out = []
    order = GATE_ORDER[layer._cell]
    for k in range(layer.num_layers):
        for direction in DIRECTIONS[:layer.num_directions]:
            gates = [layer.gate(g, k, direction) for g in order]
            out.append(np.concatenate([g.kernel for g in gates], axis=1))
            out.append(np.concatenate([g.recurrent for g in gates], axis=1))
            if layer.use_bias:
                b = np.concatenate([g.bias for g in gates])
                if layer._cell == "gru":
                    rb = np.concatenate([g.recurrent_bias for g in gates])
                    b = np.stack([b, rb]) if layer.reset_after else b + rb
                out.append(b)
    return out
