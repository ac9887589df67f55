"""Keras 3 and Keras 2 (tf.keras): layer objects, `.keras`, `.weights.h5`, legacy `.h5`.

Layout: `get_weights()` of LSTM / GRU is [kernel (I, G*H), recurrent_kernel (H, G*H), bias];
column blocks LSTM i,f,c,o and GRU z,r,h; GRU bias is (2, 3H) = [input; recurrent] with
reset_after=True and (3H,) with reset_after=False. Bidirectional gives forward then backward.
Keras-2 CuDNNLSTM / CuDNNGRU store each gate block as cuDNN's row-major (H, I) matrix poured into
the (I, H) block, transposed recurrent blocks and a bias [b_W(all gates), b_R(all gates)].

Semantics carried over from the saved config: activation / recurrent_activation (tanh, sigmoid,
hard_sigmoid, relu, linear, softsign, elu, softplus; see "hard_sigmoid" below), reset_after, go_backwards (-> reverse=True; note Keras returns a go_backwards layer's outputs in
processing order, i.e. flipped in time, while fastrnn keeps original time order), use_bias and
masking (a plain layer copies the previous output at masked steps: masked_output="carry", unless
its config says zero_output_for_mask; Bidirectional forces zeros: masked_output="zero").

Recurrent layers fastrnn cannot run (SimpleRNN, ConvLSTM, TimeDistributed, Bidirectional with
merge_mode other than 'concat', stateful=True, activations fastrnn lacks) never block the others:
`from_keras` skips them with one warning, `describe_layers` lists each with its reason. Nested
models are read through. `all_weights` returns every weight of a model by name (embeddings, dense
layers, ...). `save_keras` / `to_keras_model` write a layer as a Keras 3 model.

HDF5 files are read through h5py/libhdf5, which can loop forever on some deliberately corrupted
files (damage in a `.keras` zip is caught by the zip's CRC first): file contents are parsed in a
child process with a time limit (FASTRNN_HDF5_TIMEOUT seconds, default 60).

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

from ._isolated import in_child
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
KERAS_ACTIVATIONS = ("tanh", "sigmoid", "hard_sigmoid", "relu", "linear", "softsign", "elu",
                     "softplus")


def _activation_name(value):
    if isinstance(value, dict):  # {"class_name": "function", "config": "tanh"} style
        value = value.get("config", value.get("class_name"))
        if isinstance(value, dict):
            value = value.get("name")
    if value is None:  # Keras: activation=None is the identity
        value = "linear"
    return value


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


# Recurrent layers fastrnn does not run: listed (with the reason) rather than passed over.
_OTHER_RECURRENT = {
    "SimpleRNN": "fastrnn runs LSTM and GRU cells only",
    "RNN": "a generic keras.layers.RNN wrapper around a cell; use LSTM / GRU layers",
    "ConvLSTM1D": "a convolutional LSTM (its gates are convolutions, not matrix products)",
    "ConvLSTM2D": "a convolutional LSTM (its gates are convolutions, not matrix products)",
    "ConvLSTM3D": "a convolutional LSTM (its gates are convolutions, not matrix products)",
}
_NESTED_MODELS = ("Sequential", "Functional", "Model")
_SUPPORTED = "LSTM, GRU, CuDNNLSTM, CuDNNGRU, Bidirectional(merge_mode='concat')"


def is_recurrent(class_name, config):
    """Whether a Keras layer (class name, config) is a recurrent layer, supported or not."""
    if class_name in _RNN_CLASSES or class_name in _OTHER_RECURRENT \
            or class_name == "Bidirectional":
        return True
    if class_name == "TimeDistributed" and isinstance(config, dict):
        inner = config.get("layer")
        return isinstance(inner, dict) and is_recurrent(inner.get("class_name"),
                                                        inner.get("config"))
    return False


def _sub_reason(class_name, config):
    """Why a (non-wrapper) Keras recurrent layer config cannot be run, or None."""
    if class_name not in _RNN_CLASSES:
        why = _OTHER_RECURRENT.get(class_name)
        return (f"{class_name} is not a supported recurrent layer ({_SUPPORTED})"
                + (f": {why}" if why else ""))
    if not isinstance(config, dict):
        return "its config is not a mapping"
    names = []
    for what, default in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        name = _activation_name(config.get(what, default))
        if not isinstance(name, str) or name not in KERAS_ACTIVATIONS:
            return (f"{what}={name!r} is not supported; fastrnn reads the Keras activations "
                    f"{', '.join(KERAS_ACTIVATIONS)}")
        names.append(name)
    if class_name.startswith("CuDNN") and names != ["tanh", "sigmoid"]:
        return (f"{class_name} with activation={names[0]!r}, recurrent_activation="
                f"{names[1]!r}: cuDNN layers only run tanh / sigmoid")
    if config.get("time_major"):
        return "time_major=True is not supported"
    if config.get("stateful"):
        return "stateful=True is not supported; pass the state explicitly"
    return None


def _bidirectional_reason(config):
    merge = config.get("merge_mode", "concat")
    if merge != "concat":
        return (f"Bidirectional merge_mode={merge!r} is not supported (only 'concat': fastrnn "
                "returns both directions side by side)")
    fwd = config.get("layer")
    bwd = config.get("backward_layer") or fwd
    if not isinstance(fwd, dict) or not isinstance(bwd, dict):
        return "its Bidirectional config has no 'layer' entry"
    for sub in (fwd, bwd):
        reason = _sub_reason(sub.get("class_name"), sub.get("config", {}))
        if reason:
            return reason
    f_conf, b_conf = fwd.get("config", {}), bwd.get("config", {})
    if _RNN_CLASSES[fwd["class_name"]] != _RNN_CLASSES[bwd["class_name"]] \
            or f_conf.get("use_bias", True) != b_conf.get("use_bias", True) \
            or f_conf.get("reset_after", True) != b_conf.get("reset_after", True) \
            or f_conf.get("go_backwards", False):
        return "Bidirectional with differing or go_backwards forward layers is not supported"
    return None


def unsupported_reason(class_name, config):
    """Why fastrnn cannot run a Keras recurrent layer given by class name and config (a
    sentence), or None when it can. Only the config is looked at, never weights."""
    if class_name == "Bidirectional":
        return _bidirectional_reason(config if isinstance(config, dict) else {})
    if class_name == "TimeDistributed":
        inner = (config or {}).get("layer", {}) if isinstance(config, dict) else {}
        return (f"TimeDistributed({inner.get('class_name')}) is not supported: it runs the "
                "layer on every slice of a 4-D input")
    return _sub_reason(class_name, config)


def _sub_layer(class_name, config, label):
    """(cell, cudnn, options) of a Keras LSTM / GRU config; unsupported options raise."""
    reason = _sub_reason(class_name, config)
    if reason:
        raise ValueError(f"{label}: {reason}")
    cell = _RNN_CLASSES[class_name]
    cudnn = class_name.startswith("CuDNN")
    act = _activation_name(config.get("activation", "tanh"))
    rec = _activation_name(config.get("recurrent_activation", "sigmoid"))
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
        reason = _bidirectional_reason(config)
        if reason:
            raise ValueError(f"{label}: {reason}")
        fwd = config["layer"]
        bwd = config.get("backward_layer") or fwd
        f_cell, f_cudnn, f_opt = _sub_layer(fwd["class_name"], fwd.get("config", {}), label)
        b_cell, b_cudnn, b_opt = _sub_layer(bwd["class_name"], bwd.get("config", {}), label)
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
# Entry points

# save_keras writes a stacked layer as one Keras layer per stacked layer, named
# "<name>_layer<k>", in a model of this name; from_keras joins such layers back into one.
STACK_MODEL_NAME = "fastrnn_stack"


def from_keras(source, name=None, *, dtype=None):
    """Layer(s) from a Keras layer or model object, or a `.keras` / `.weights.h5` / `.h5` file
    (path or bytes).

    Args:
        source: a Keras layer / model object, a path, or the file's bytes.
        name: the user name of the recurrent layer to load (nested models included); only
            that layer is read.
        dtype: "float32" / "float64" for the layers (default: the file's).

    Returns a layer when the source has one supported recurrent layer (or `name` picks one),
    else a dict user name -> layer in model order. A model written by `save_keras` from a
    stacked layer comes back as that one stacked layer under its original name.

    Recurrent layers fastrnn cannot run (SimpleRNN, ConvLSTM, Bidirectional merge_mode='sum',
    stateful=True, an activation it lacks, ...) are skipped with one UserWarning naming each
    and why; `describe_layers` lists them. Errors: ValueError when `name` is such a layer, or
    when no recurrent layer can be loaded (each one's reason listed); KeyError for an unknown
    `name`; ValueError for a damaged file.

        >>> layer = fastrnn.io.keras.from_keras("model.keras", name="encoder")
    """
    entries, label = _load_entries(source, dtype, only=name)
    return _select(entries, name, label)


def describe_layers(source):
    """Every recurrent layer of a Keras source, loadable or not, in model order.

    Args:
        source: a Keras layer / model object, or a `.keras` / `.weights.h5` / `.h5` file (path
            or bytes).

    Returns a list of (name, description, reason): description is the `fastrnn inspect` line
    of a layer fastrnn runs (reason None); reason says why fastrnn cannot run one
    (description None).

        >>> for name, text, why in describe_layers("model.keras"):
        ...     print(name, text or f"unsupported: {why}")
    """
    from ._common import describe
    entries, _ = _load_entries(source, None)
    return [(n, None if layer is None else describe(layer, GATE_ORDER[layer._cell]), reason)
            for n, layer, reason in entries]


def _load_entries(source, dtype, only=None):
    """([(name, layer or None, reason or None)], label); with `only`, the other supported
    layers are listed with layer None and reason None (not read)."""
    if hasattr(source, "get_config") and hasattr(source, "get_weights"):
        return _scan(*_object_entries(source), dtype, only, "Keras model"), "Keras model"
    data, label = read_source(source)
    if data[:4] != b"PK\x03\x04" and data[:8] != _HDF5_SIGNATURE:
        raise ValueError(f"{label}: not a Keras file (neither a .keras zip nor HDF5)")
    require("h5py", "keras")
    dtype = None if dtype is None else np.dtype(dtype).name
    if in_child():
        return _parse_entries(data, label, dtype, only), label
    # libhdf5 may loop forever on a damaged file: parse in a child process with a time limit.
    return _in_child_process("entries", data, label, dtype, only), label


def _select(entries, name, label):
    if name is not None:
        for n, layer, reason in entries:
            if n == name:
                if layer is None:
                    raise ValueError(f"{label}: layer {name!r} cannot be loaded: {reason}")
                return layer
        raise KeyError(f"no recurrent layer named {name!r} in {label}; found "
                       f"{[n for n, _, _ in entries]}")
    layers = {n: layer for n, layer, _ in entries if layer is not None}
    skipped = [(n, reason) for n, _, reason in entries if reason is not None]
    listing = "; ".join(f"{n!r}: {reason}" for n, reason in skipped)
    if skipped and not layers:
        raise ValueError(f"{label}: no recurrent layer fastrnn can run: {listing}")
    if skipped:
        import warnings
        warnings.warn(f"{label}: skipped {len(skipped)} recurrent layer(s) fastrnn cannot run: "
                      f"{listing}; loaded {list(layers)}", UserWarning, stacklevel=3)
    return single_or_dict(layers, None, label)


def _scan(entries, model_name, dtype, only, label):
    """Build the layers of [(name, class, config, arrays(), hard_sigmoid flavour)].

    Only the config decides whether a layer is supported; a supported layer whose weights do
    not fit its config raises (a damaged file). With `only`, the other layers are not read."""
    stacked = model_name == STACK_MODEL_NAME
    out = []
    for n, cls, config, arrays, flavour in entries:
        reason = unsupported_reason(cls, config)
        wanted = only is None or n == only or (stacked and _stack_base(n) == only)
        if reason is not None or not wanted:
            out.append((n, None, reason))
            continue
        out.append((n, layer_from_config(cls, config, arrays(), name=n, dtype=dtype,
                                         label=label, hard_sigmoid=flavour), None))
    return _join_stack(out) if stacked else out


def _stack_base(name):
    base, sep, k = str(name).rpartition("_layer")
    return base if sep and k.isdigit() else None


def _join_stack(entries):
    """Rejoin the "<name>_layer<k>" layers save_keras wrote for one stacked layer. Layers
    that do not form a complete, consistent stack stay as they are."""
    from .npz import layer_config
    groups = {}
    for n, layer, _ in entries:
        base = _stack_base(n)
        if base is not None and layer is not None:
            groups.setdefault(base, {})[int(n.rpartition("_layer")[2])] = layer
    joined = {}
    for base, parts in groups.items():
        if sorted(parts) != list(range(len(parts))) or len(parts) < 2:
            continue
        first = layer_config(parts[0])
        sd = {}
        for k, part in parts.items():
            config = layer_config(part)
            if k:
                previous = parts[k - 1]
                if config["input_size"] != previous.num_directions * previous.hidden_size:
                    break
            if {**config, "input_size": 0, "name": 0} != {**first, "input_size": 0, "name": 0} \
                    or config["num_layers"] != 1 or part.dtype != parts[0].dtype:
                break
            sd.update({f"layer{k}." + key.partition(".")[2]: v
                       for key, v in part.state_dict().items()})
        else:
            kwargs = {key: first[key] for key in ("bidirectional", "use_bias", "reverse",
                                                  "dropout", "recurrent_dropout",
                                                  "masked_output")}
            kwargs.update(first.get("variant", {}))
            if first["cell"] == "gru":
                kwargs["reset_after"] = first["reset_after"]
            joined[base] = build(first["cell"], first["input_size"], first["hidden_size"], sd,
                                 dtype=parts[0].dtype, num_layers=len(parts), name=base,
                                 **kwargs)
    out, done = [], set()
    for n, layer, reason in entries:
        base = _stack_base(n)
        if base in joined:
            if base not in done:
                out.append((base, joined[base], None))
                done.add(base)
        else:
            out.append((n, layer, reason))
    return out


# ---- child process (libhdf5 can loop forever on a damaged file) ----

_CHILD = """
import sys
from fastrnn.io.keras import _child_main
sys.exit(_child_main(sys.argv[1:]))
"""


def _child_main(argv):
    """The child's work: parse stdin's bytes, write the result under argv[0]."""
    import os
    import sys
    from .npz import save_npz
    out, mode, label, dtype, only = argv
    data = sys.stdin.buffer.read()
    try:
        if mode == "entries":
            entries = _parse_entries(data, label, dtype or None, only or None)
        else:
            weights = _parse_weights(data, label)
    except ImportError as exc:
        print(exc, file=sys.stderr)
        return 3
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if mode == "entries":
        for i, (_, layer, _) in enumerate(entries):
            if layer is not None:
                save_npz(layer, os.path.join(out, f"{i}.npz"))
        listing = [[n, reason, layer is not None] for n, layer, reason in entries]
    else:
        listing = list(weights)
        with open(os.path.join(out, "weights.npz"), "wb") as f:
            np.savez(f, *weights.values())
    with open(os.path.join(out, "listing.json"), "w") as f:
        json.dump(listing, f)
    return 0


def _in_child_process(mode, data, label, dtype=None, only=None, timeout=None):
    """_parse_entries / _parse_weights run in a child Python process with a time limit
    (FASTRNN_HDF5_TIMEOUT seconds, default 60); results come back as .npz files."""
    import os
    import subprocess
    import sys
    import tempfile
    from ._isolated import _CHILD_FLAG
    from .npz import load_npz

    if timeout is None:
        timeout = float(os.environ.get("FASTRNN_HDF5_TIMEOUT", "60"))
    env = dict(os.environ, **{_CHILD_FLAG: "1"})
    with tempfile.TemporaryDirectory(prefix="fastrnn-keras-") as out:
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD, out, mode, label, dtype or "",
                                   "" if only is None else str(only)],
                                  input=data, capture_output=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise ValueError(f"{label}: reading the HDF5 data did not finish within {timeout:g} s "
                             "(a damaged file can make libhdf5 loop; FASTRNN_HDF5_TIMEOUT sets "
                             "the limit)") from None
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        message = message[-1] if message else f"exit status {proc.returncode}"
        if proc.returncode == 3:
            raise ImportError(message)
        if proc.returncode == 2:
            raise ValueError(message)
        if proc.returncode != 0:
            raise ValueError(f"{label}: the HDF5 reader failed ({message})")
        with open(os.path.join(out, "listing.json")) as f:
            listing = json.load(f)
        if mode == "entries":
            return [(n, load_npz(os.path.join(out, f"{i}.npz")) if built else None, reason)
                    for i, (n, reason, built) in enumerate(listing)]
        with np.load(os.path.join(out, "weights.npz"), allow_pickle=False) as z:
            return {n: z[f"arr_{i}"] for i, n in enumerate(listing)}


def _parse_entries(data, label, dtype, only=None):
    """_scan's result for `.keras` zip or HDF5 bytes, in this process."""
    try:
        reader = _keras_zip_entries if data[:4] == b"PK\x03\x04" else _h5_entries
        entries, model_name, f = reader(data, label)
        with f:  # the entries read their weights from the open file
            return _scan(entries, model_name, dtype, only, label)
    except (OSError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
        # h5py's errors for damaged structures, and configs of the wrong JSON types
        raise ValueError(f"{label}: damaged Keras/HDF5 file ({type(exc).__name__}: {exc})"
                         ) from exc


def _parse_bytes(data, label, dtype):
    """{user name: layer} of the supported layers in `.keras` zip or HDF5 bytes, in this
    process."""
    return {n: layer for n, layer, _ in _parse_entries(data, label, dtype) if layer is not None}


# ---- live objects ----

def _object_flavour(layer):
    """hard_sigmoid flavour of a live layer object: from the version of the package defining it
    (keras 3, or Keras 2: standalone keras 2.x, tf_keras, tensorflow.python.keras)."""
    import sys
    top = type(layer).__module__.split(".")[0]
    if top == "tensorflow":  # tf.keras inside TensorFlow <= 2.15 (tensorflow.python.keras ...)
        return "keras2" if "keras" in type(layer).__module__ else "keras3"
    version = getattr(sys.modules.get(top), "__version__", None)
    return hard_sigmoid_flavour(version, "keras3")


def _object_entries(obj):
    """([(name, class, config, arrays(), flavour)], model name) of a live Keras object."""
    entries = []

    def walk(o):
        cls = type(o).__name__
        if hasattr(o, "layers") and cls not in ("Bidirectional", "TimeDistributed"):
            for member in o.layers:
                walk(member)
            return
        config = o.get_config()
        if is_recurrent(cls, config):
            # the variables' backend values: get_weights() warns under numpy 2 on some backends
            entries.append((o.name, cls, config,
                            lambda o=o: [getattr(w, "value", w) for w in o.weights],
                            _object_flavour(o)))

    walk(obj)
    return entries, getattr(obj, "name", None) if hasattr(obj, "layers") else None


# ---- .keras zip and Keras 3 .weights.h5 ----

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
        if cls in _NESTED_MODELS:
            out += _config_layers(entry)
        elif isinstance(conf, dict):
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


def _read_keras_zip(data, label):
    """(config, weights h5 bytes, hard_sigmoid flavour) of a `.keras` zip."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        config = json.loads(z.read("config.json"))
        weights = z.read("model.weights.h5")
        metadata = json.loads(z.read("metadata.json")) if "metadata.json" in z.namelist() \
            else {}
    except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, EOFError, NotImplementedError,
            OSError) as exc:
        raise ValueError(f"{label}: not a readable .keras file ({exc})") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{label}: config.json does not describe a Keras model")
    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    flavour = hard_sigmoid_flavour(version if isinstance(version, str) else None, "keras3")
    return config, weights, flavour


def _keras_zip_entries(data, label):
    config, weights, flavour = _read_keras_zip(data, label)
    if config.get("class_name") in _NESTED_MODELS:
        configs = _config_layers(config)
    else:  # a bare layer saved alone
        configs = [(config.get("class_name"), config.get("config", {}))]
    f = _h5(weights, label)
    groups = _layer_groups(f)
    entries = []
    for cls, conf in configs:
        if not is_recurrent(cls, conf):
            continue
        n = conf.get("name")
        group = groups.get(n)
        if group is None and unsupported_reason(cls, conf) is None:
            raise ValueError(f"{label}: layer {n!r} is in the config but has no weights")
        entries.append((n, cls, conf, lambda g=group, n=n: _group_arrays(g, label, n),
                        flavour))
    name = config.get("config", {}).get("name") if isinstance(config.get("config"), dict) \
        else None
    return entries, name, f


def _object_name(group):
    """The user name a Keras 3 weights file records for an object (its vars group's 'name')."""
    v = group.get("vars")
    name = v.attrs.get("name") if v is not None else None
    return name.decode() if isinstance(name, bytes) else None if name is None else str(name)


def _layer_groups(f):
    """{user name: h5 group} of the layers in a Keras 3 weights file, nested models included."""
    import h5py
    out = {}

    def walk(group):
        for key in group.keys():
            g = group[key]
            if not isinstance(g, h5py.Group):
                continue
            if isinstance(g.get("layers"), h5py.Group):  # a nested model
                walk(g["layers"])
            out.setdefault(_object_name(g) or key, g)

    if isinstance(f.get("layers"), h5py.Group):
        walk(f["layers"])
    elif "cell" in f or "forward_layer" in f:  # a bare layer saved alone
        out[_object_name(f) or "layer"] = f
    return out


def _vars(group, label, what):
    """Arrays in a Keras 3 `vars` group, in creation order (0, 1, 2)."""
    if group is None:
        return []
    keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
    return [_read(group[k], label, f"{what}/{k}") for k in keys]


def _group_arrays(g, label, key):
    """get_weights() of a recurrent layer's group: [kernel, recurrent_kernel(, bias)] per
    direction."""
    if "forward_layer" in g and "backward_layer" in g:
        return _vars(g["forward_layer"].get("cell/vars"), label, f"{key}/forward_layer") + \
            _vars(g["backward_layer"].get("cell/vars"), label, f"{key}/backward_layer")
    return _vars(g.get("cell/vars"), label, key)


def _h5_entries(data, label):
    """(entries, model name, open h5 file) of a Keras 3 .weights.h5 or a legacy .h5."""
    f = _h5(data, label)
    if "layers" in f and "layer_names" not in f.attrs and "model_weights" not in f:
        return _weights_h5_entries(f, label), None, f
    return (*_legacy_entries(f, label), f)


def _weights_h5_entries(f, label):
    """A Keras 3 `.weights.h5` (no config): the cell type, sizes, use_bias and reset_after
    come from the variables, the other options take Keras' defaults."""
    if not isinstance(f.get("layers"), __import__("h5py").Group):
        raise ValueError(f"{label}: no /layers group; not a Keras 3 weights file")
    entries = []
    for n, g in _layer_groups(f).items():
        if not ("cell" in g or ("forward_layer" in g and "backward_layer" in g)):
            continue
        arrays = _group_arrays(g, label, n)
        cls, conf = _infer_config(g, arrays, label)
        entries.append((n, cls, conf, lambda a=arrays: a, "keras3"))
    return entries


def _cell_class(group):
    """LSTM / GRU / SimpleRNN from a Keras 3 cell's recorded name ("lstm_cell", ...)."""
    name = group.get("cell/vars").attrs.get("name", "") if "cell/vars" in group else ""
    name = name.decode() if isinstance(name, bytes) else str(name)
    for marker, cls in (("simple_rnn", "SimpleRNN"), ("lstm", "LSTM"), ("gru", "GRU")):
        if marker in name:
            return cls
    return None


def _infer_config(g, arrays, label):
    """(class, config) for a weights-only file: cell from the variables, everything else
    default. A cell of unknown type gets class None (listed as unsupported)."""
    def sub(cls, arrs):
        conf = {"use_bias": len(arrs) >= 3}
        if cls == "GRU":
            conf["reset_after"] = len(arrs) >= 3 and arrs[2].ndim == 2
        return conf

    if "forward_layer" in g and "backward_layer" in g:
        cls = _cell_class(g["forward_layer"])
        half = len(arrays) // 2
        return "Bidirectional", {"layer": {"class_name": cls, "config": sub(cls, arrays[:half])},
                                 "merge_mode": "concat"}
    cls = _cell_class(g)
    return cls, sub(cls, arrays)


# ---- legacy .h5 (Keras 2, or Keras 3's model.save("x.h5")) ----

def _attr_list(value):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value)] \
        if value is not None and np.size(value) else []


def _legacy_config(f, root, label):
    """(model config or {}, hard_sigmoid flavour) of a legacy .h5 file."""
    version = f.attrs.get("keras_version", root.attrs.get("keras_version"))
    if isinstance(version, np.ndarray) and version.size == 1:
        version = version.item()
    flavour = hard_sigmoid_flavour(version if isinstance(version, (str, bytes)) else None,
                                   "keras2")
    model_config = f.attrs.get("model_config")
    if model_config is None:
        return {}, flavour
    if isinstance(model_config, bytes):
        model_config = model_config.decode()
    try:
        config = json.loads(model_config)
    except ValueError as exc:
        raise ValueError(f"{label}: model_config is not valid JSON") from exc
    return (config if isinstance(config, dict) else {}), flavour


def _legacy_entries(f, label):
    root = f["model_weights"] if "model_weights" in f else f
    config, flavour = _legacy_config(f, root, label)
    top = config.get("config", {}) if isinstance(config.get("config"), dict) else {}
    top_entries = {e.get("config", {}).get("name"): e for e in top.get("layers", []) or []
                   if isinstance(e, dict) and isinstance(e.get("config"), dict)}
    names = _attr_list(root.attrs.get("layer_names"))
    if not names:
        raise ValueError(f"{label}: no layer_names attribute; not a Keras weights file")
    entries = []
    for lname in names:
        if lname not in root:
            raise ValueError(f"{label}: layer {lname!r} is listed but has no weights group")
        g = root[lname]
        wnames = _attr_list(g.attrs.get("weight_names"))
        entry = top_entries.get(lname, {})
        if entry.get("class_name") in _NESTED_MODELS:
            # a nested model: its weights are listed together, "<model>/<layer>/..." (Keras 3)
            # or "<layer>/..." (Keras 2); split them by inner layer name
            for cls, conf in _config_layers(entry):
                inner = conf.get("name")
                if not is_recurrent(cls, conf):
                    continue
                mine = [w for w in wnames if w.startswith(f"{inner}/") or f"/{inner}/" in w]
                entries.append((inner, cls, conf,
                                lambda g=g, ws=mine, n=inner: _legacy_arrays(g, ws, label, n),
                                flavour))
            continue
        if not wnames:
            continue
        if entry:
            cls, conf = entry.get("class_name"), entry["config"]
        else:
            cls, conf = _infer_legacy(wnames, lambda g=g, ws=wnames, n=lname:
                                      _legacy_arrays(g, ws, label, n))
        if cls is None or not is_recurrent(cls, conf):
            continue
        entries.append((lname, cls, conf,
                        lambda g=g, ws=wnames, n=lname: _legacy_arrays(g, ws, label, n),
                        flavour))
    return entries, top.get("name")


def _legacy_arrays(g, wnames, label, lname):
    arrays = []
    for wn in wnames:
        if wn not in g:
            raise ValueError(f"{label}: layer {lname!r} lacks its weight {wn!r}")
        arrays.append(_read(g[wn], label, f"{lname}/{wn}"))
    return arrays


def _infer_legacy(wnames, arrays):
    """(class name, config) of a legacy layer from its weight names (no model_config)."""
    joined = " ".join(wnames)
    if "cudnn_lstm" in joined:
        cls = "CuDNNLSTM"
    elif "cudnn_gru" in joined:
        cls = "CuDNNGRU"
    elif "simple_rnn_cell" in joined:
        return "SimpleRNN", {}
    elif "lstm_cell" in joined:
        cls = "LSTM"
    elif "gru_cell" in joined:
        cls = "GRU"
    else:
        return None, None
    arrays = arrays()
    bidir = any("/forward_" in w for w in wnames) and any("/backward_" in w for w in wnames)
    arrs = arrays[:len(arrays) // 2] if bidir else arrays
    conf = {"use_bias": len(arrs) >= 3}
    if cls == "GRU":
        conf["reset_after"] = len(arrs) >= 3 and arrs[2].ndim == 2
    if bidir:
        return "Bidirectional", {"layer": {"class_name": cls, "config": conf}}
    return cls, conf


# ---------------------------------------------------------------------------------------------
# Every weight of a model (embeddings, dense layers, ... and the recurrent layers)

# Variable names of Keras layers, in the order a Keras 3 weights file numbers them; trailing
# names fall away when a layer has fewer (use_bias=False). Cells: LSTM / GRU / SimpleRNN.
_VAR_NAMES = {
    "Dense": ("kernel", "bias"), "EinsumDense": ("kernel", "bias"),
    "Embedding": ("embeddings",), "PReLU": ("alpha",),
    "Conv1D": ("kernel", "bias"), "Conv2D": ("kernel", "bias"), "Conv3D": ("kernel", "bias"),
    "Conv1DTranspose": ("kernel", "bias"), "Conv2DTranspose": ("kernel", "bias"),
    "Conv3DTranspose": ("kernel", "bias"), "DepthwiseConv1D": ("kernel", "bias"),
    "DepthwiseConv2D": ("kernel", "bias"),
    "SeparableConv1D": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "cell": ("kernel", "recurrent_kernel", "bias"),
    # MultiHeadAttention's projections (EinsumDense)
    "query_dense": ("kernel", "bias"), "key_dense": ("kernel", "bias"),
    "value_dense": ("kernel", "bias"), "output_dense": ("kernel", "bias"),
}
_VAR_CLASSES = {k.lower().replace("_", ""): k for k in _VAR_NAMES}


def all_weights(source):
    """Every weight of a Keras model, recurrent or not, as numpy arrays.

    Args:
        source: a Keras layer / model object, or a `.keras` / `.weights.h5` / legacy `.h5`
            file (path or bytes). Files are read with h5py (in a child process with a time
            limit, as `from_keras`); nothing in them is executed.

    Returns a dict "<layer name>/<weight name>" -> array in file order, e.g.
    "embedding/embeddings", "dense/kernel", "dense/bias", "enc/lstm_cell/kernel" and, for a
    Bidirectional "bi", "bi/forward_lstm/lstm_cell/kernel". Legacy `.h5` files give their
    stored weight names (without ":0"). A Keras 3 file numbers its variables; the names of
    common layers (Dense, Embedding, convolutions, normalizations, recurrent cells,
    attention projections) are restored, other variables keep their number
    ("<layer>/<sub-layer>/0").

        >>> weights = all_weights("model.keras")
        >>> table = weights["embedding/embeddings"]      # (vocabulary, features)
    """
    if hasattr(source, "get_config") and hasattr(source, "get_weights"):
        return _object_weights(source)
    data, label = read_source(source)
    if data[:4] != b"PK\x03\x04" and data[:8] != _HDF5_SIGNATURE:
        raise ValueError(f"{label}: not a Keras file (neither a .keras zip nor HDF5)")
    require("h5py", "keras")
    if in_child():
        return _parse_weights(data, label)
    return _in_child_process("weights", data, label)


def _object_weights(obj):
    out = {}

    def walk(o):
        if hasattr(o, "layers") and type(o).__name__ not in ("Bidirectional", "TimeDistributed"):
            for member in o.layers:
                walk(member)
            return
        for w in o.weights:
            path = getattr(w, "path", None) or w.name
            path = path[:-2] if path.endswith(":0") else path
            # Keras 3 paths depend on the scope the layer was built in: "sequential/bi/...",
            # or "forward_gru/..." without the wrapper; name them from the layer on
            parts = path.split("/")
            path = "/".join(parts[parts.index(o.name):] if o.name in parts[:-1]
                            else [o.name, *parts])
            out[path] = as_array(getattr(w, "value", w), path)

    walk(obj)
    return out


def _parse_weights(data, label):
    """all_weights of `.keras` zip or HDF5 bytes, in this process."""
    try:
        if data[:4] == b"PK\x03\x04":
            config, weights, _ = _read_keras_zip(data, label)
            classes = {c.get("name"): (cls, c) for cls, c in _config_layers(config)}
            with _h5(weights, label) as f:
                return _numbered_weights(f, classes, label)
        with _h5(data, label) as f:
            if "layers" in f and "layer_names" not in f.attrs and "model_weights" not in f:
                return _numbered_weights(f, {}, label)
            return _legacy_weights(f, label)
    except (OSError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{label}: damaged Keras/HDF5 file ({type(exc).__name__}: {exc})"
                         ) from exc


def _var_names(key, cls, config, count):
    """Names of an object's `count` numbered variables (None: keep the numbers)."""
    if cls is None:  # no config: the group key is Keras' snake_case class name ("dense_1")
        cls = _VAR_CLASSES.get(key.rstrip("0123456789").rstrip("_").replace("_", ""))
    if cls in ("BatchNormalization", "LayerNormalization", "GroupNormalization"):
        config = config or {}
        names = ["gamma"] * bool(config.get("scale", True)) + \
            ["beta"] * bool(config.get("center", True))
        if cls == "BatchNormalization":
            names += ["moving_mean", "moving_variance"]
        if not config and count == (4 if cls == "BatchNormalization" else 2):
            names = names[:count]
        return names if len(names) == count else None
    names = _VAR_NAMES.get(cls)
    return list(names[:count]) if names and count <= len(names) else None


def _numbered_weights(f, classes, label):
    """Keras 3 weights file: /layers/<key>/[<sub>/...]/vars/<i>, each object's user name in
    its vars group's 'name' attribute."""
    import h5py
    out = {}

    def walk(group, prefix, key, cls, config):
        v = group.get("vars")
        if isinstance(v, h5py.Group) and len(v):
            keys = sorted(v.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
            names = _var_names(key, cls, config, len(keys))
            for i, k in enumerate(keys):
                out[f"{prefix}/{names[i] if names else k}"] = _read(v[k], label,
                                                                  f"{prefix}/{k}")
        # h5py lists names alphabetically; a Bidirectional's forward half comes first in Keras
        subs = sorted(group.keys(), key=lambda s: (s != "forward_layer", s))
        for sub in subs:
            g = group[sub]
            if sub == "vars" or not isinstance(g, h5py.Group):
                continue
            if sub == "layers":  # a nested model: its layers go by their own names
                walk_layers(g)
                continue
            walk(g, f"{prefix}/{_object_name(g) or sub}", sub, None, None)

    def walk_layers(group):
        for key in group.keys():
            g = group[key]
            if not isinstance(g, h5py.Group):
                continue
            name = _object_name(g) or key
            cls, config = classes.get(name, (None, None))
            if cls in _NESTED_MODELS:
                walk_layers(g["layers"]) if isinstance(g.get("layers"), h5py.Group) else None
                continue
            walk(g, name, key, cls, config)

    if not isinstance(f.get("layers"), h5py.Group):
        raise ValueError(f"{label}: no /layers group; not a Keras 3 weights file")
    walk_layers(f["layers"])
    return out


def _legacy_weights(f, label):
    root = f["model_weights"] if "model_weights" in f else f
    names = _attr_list(root.attrs.get("layer_names"))
    if not names:
        raise ValueError(f"{label}: no layer_names attribute; not a Keras weights file")
    out = {}
    for lname in names:
        if lname not in root:
            raise ValueError(f"{label}: layer {lname!r} is listed but has no weights group")
        wnames = _attr_list(root[lname].attrs.get("weight_names"))
        for wn, a in zip(wnames, _legacy_arrays(root[lname], wnames, label, lname)):
            out[wn[:-2] if wn.endswith(":0") else wn] = a
    return out


# ---------------------------------------------------------------------------------------------
# Export

def _export_check(layer):
    blocked = [f for f in layer.variant_features if f != "activations"]
    if blocked:
        raise ValueError(f"Keras' {layer._cell.upper()} has no {', '.join(blocked)}: "
                         f"{layer!r} cannot be represented")


def to_keras(layer, layer_index=None):
    """Keras `get_weights()` list of one Keras layer: [kernel, recurrent_kernel, bias] per
    direction (forward then backward, as Bidirectional). A GRU with reset_after=False gets its
    recurrent biases folded into the (3H,) bias (they act outside the reset there).

    Args:
        layer: a fastrnn LSTM / GRU.
        layer_index: which stacked layer (0 .. num_layers - 1); needed when num_layers > 1,
            as a stack is one Keras layer per stacked layer (`to_keras_model` builds them all).

    The list holds weights only; the Keras layer receiving them decides the rest:
    `zero_output_for_mask=True` gives masked_output="zero" (Keras' default is "carry", and
    Bidirectional always gives zeros); a reverse=True layer matches `go_backwards=True` with
    the outputs flipped back in time (Keras returns them in processing order).
    `to_keras_model` / `save_keras` configure all of this.

    Errors: ValueError for peepholes, clips, coupled gates or a projection (Keras layers
    have none), and for a stacked layer without layer_index. Non-default activations are not
    part of a weight list: a UserWarning names the `activation` / `recurrent_activation` to
    give the Keras layer.

        >>> keras_layer.set_weights(to_keras(fastrnn.LSTM(8, 16)))
    """
    _export_check(layer)
    if layer_index is None:
        if layer.num_layers > 1:
            raise ValueError(f"{layer!r} is a stack of {layer.num_layers} layers, which is "
                             f"{layer.num_layers} Keras layers: call to_keras(layer, "
                             "layer_index=k) for each, or build them all with to_keras_model")
        layer_index = 0
    if isinstance(layer_index, bool) or not isinstance(layer_index, (int, np.integer)) \
            or not 0 <= layer_index < layer.num_layers:
        raise ValueError(f"layer_index must be in [0, {layer.num_layers}), got {layer_index!r}")
    if layer.variant_features:
        import warnings
        warnings.warn(f"{layer!r}: the weights do not carry the activations; build the Keras "
                      f"layer with the same activation / recurrent_activation "
                      f"{layer.activations[0]}", UserWarning, stacklevel=2)
    return _keras_weights(layer, int(layer_index))


def _keras_weights(layer, k):
    out = []
    order = GATE_ORDER[layer._cell]
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


def _keras_activation(spec, layer):
    """The Keras 3 name of a normalised (name, alpha, beta) activation, or ValueError."""
    name, alpha, beta = spec
    if name in ("tanh", "sigmoid", "relu", "linear", "softsign", "softplus") \
            or (name == "elu" and alpha == 1.0) \
            or (name == "hard_sigmoid" and np.isclose(alpha, 1 / 6, rtol=1e-12, atol=0)
                and beta == 0.5):
        return name
    what = f"{name}(alpha={alpha}, beta={beta})" if (alpha, beta) != (None, None) else name
    hint = " (Keras 3's hard_sigmoid is x / 6 + 0.5; this layer has Keras 2's 0.2 x + 0.5)" \
        if name == "hard_sigmoid" else ""
    raise ValueError(f"{layer!r}: Keras 3 has no activation {what}{hint}")


def _keras_layer_options(layer, direction):
    """(activation, recurrent_activation) Keras names for one direction of the layer."""
    slots = layer.activations[direction]
    f, g = (_keras_activation(s, layer) for s in slots[:2])
    if layer._cell == "lstm" and slots[2] != slots[1]:
        raise ValueError(f"{layer!r}: Keras' LSTM uses one activation for the cell input and "
                         f"the output; this layer has {slots[1][0]} and {slots[2][0]}")
    return g, f


def _keras_name(name):
    """Keras refuses '/' in names and the torch backend '.'."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in str(name)) or "layer"


def to_keras_model(layer):
    """A Keras 3 model computing what the layer computes: Input(shape=(None, input_size)) and
    one keras.layers.LSTM / GRU per stacked layer (Bidirectional(merge_mode="concat") for a
    bidirectional layer), return_sequences=True, holding the layer's weights.

    Carried over: activation / recurrent_activation (per direction through Bidirectional's
    backward_layer), use_bias, reset_after, dropout / recurrent_dropout, the dtype, and the
    masking of a unidirectional layer (zero_output_for_mask=True for masked_output="zero").
    Names: the Keras layer is named after the layer (`layer.name`, else "lstm" / "gru"; '/'
    and '.' become '_'); a stack's layers are "<name>_layer<k>" in a model named
    "fastrnn_stack", which `from_keras` joins back into one stacked layer of that name.
    Masks are passed as Keras does: `model(x, mask=mask)`.

    Errors: ValueError for what Keras' layers cannot express: peepholes, clips, coupled
    gates, projections, activations Keras 3 lacks (hard_sigmoid="keras2", leaky_relu, ...),
    and reverse=True (Keras' go_backwards returns its outputs flipped in time, which no
    built-in Keras layer undoes). A bidirectional layer with masked_output="carry" warns
    (UserWarning): Keras' Bidirectional outputs zeros at masked steps.

        >>> model = to_keras_model(fastrnn.GRU(8, 16, name="enc"))
        >>> model.predict(x).shape                         # (batch, time, 16)
    """
    _export_check(layer)
    if layer.reverse:
        raise ValueError(f"{layer!r}: Keras has no layer for reverse=True: go_backwards=True "
                         "returns the outputs flipped in time (processing order). Use "
                         "to_keras() weights in a go_backwards layer and flip its output "
                         "along the time axis yourself")
    acts = [_keras_layer_options(layer, d) for d in range(layer.num_directions)]
    if layer.bidirectional and layer.masked_output == "carry":
        import warnings
        warnings.warn(f"{layer!r}: Keras' Bidirectional outputs zeros at masked steps; this "
                      "layer repeats the last valid output there (masked_output='carry'). "
                      "The Keras model differs from it at masked steps only", UserWarning,
                      stacklevel=2)
    import keras
    dtype = layer.dtype.name
    cls = keras.layers.LSTM if layer._cell == "lstm" else keras.layers.GRU
    base = _keras_name(layer.name or layer._cell)
    names = [base] if layer.num_layers == 1 else \
        [f"{base}_layer{k}" for k in range(layer.num_layers)]

    def rnn(direction, **extra):
        act, rec = acts[direction]
        kw = dict(activation=act, recurrent_activation=rec, use_bias=layer.use_bias,
                  dropout=layer.dropout, recurrent_dropout=layer.recurrent_dropout,
                  return_sequences=True, dtype=dtype, **extra)
        if layer._cell == "gru":
            kw["reset_after"] = layer.reset_after
        return cls(layer.hidden_size, **kw)

    stack = []
    for k in range(layer.num_layers):
        if layer.bidirectional:
            backward = rnn(1, go_backwards=True) if acts[1] != acts[0] else None
            stack.append(keras.layers.Bidirectional(rnn(0), backward_layer=backward,
                                                    merge_mode="concat", name=names[k],
                                                    dtype=dtype))
        else:
            stack.append(rnn(0, zero_output_for_mask=layer.masked_output == "zero",
                             name=names[k]))
    inputs = z = keras.Input(shape=(None, layer.input_size), dtype=dtype)
    for klayer in stack:
        z = klayer(z)
    # functional, not Sequential: a functional model takes a mask, model(x, mask=mask)
    model = keras.Model(inputs, z, name=STACK_MODEL_NAME if layer.num_layers > 1 else "fastrnn")
    for k, klayer in enumerate(stack):
        klayer.set_weights(_keras_weights(layer, k))
    return model


def save_keras(layer, path):
    """Write the layer as a Keras 3 `.keras` model file (`to_keras_model`, then Keras'
    `model.save`); Keras must be installed (pip install keras) with a working backend.

    Args:
        layer: a fastrnn LSTM / GRU.
        path: the file to write (any name; Keras itself insists on ".keras").

    `keras.models.load_model(path)` gives a model with the layer's outputs, and
    `from_keras(path)` gives the layer back (a stack as one layer; an unnamed layer comes back
    named "lstm" / "gru"). Errors and warnings: those of `to_keras_model`.

        >>> save_keras(fastrnn.LSTM(8, 16, name="enc"), "enc.keras")
    """
    import os
    import shutil
    import tempfile
    import warnings
    model = to_keras_model(layer)
    target = os.fspath(path)
    with tempfile.TemporaryDirectory(prefix="fastrnn-keras-",
                                     dir=os.path.dirname(os.path.abspath(target))) as tmp:
        tmp_path = os.path.join(tmp, "model.keras")
        with warnings.catch_warnings():
            # Keras' torch backend converts tensors with a numpy 1 call numpy 2 deprecates
            warnings.filterwarnings("ignore", category=DeprecationWarning,
                                    message=".*__array__ implementation")
            model.save(tmp_path)
        shutil.move(tmp_path, target)
