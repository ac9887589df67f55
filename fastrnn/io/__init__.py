"""Weight loaders and exporters: one module per foreign format.

All gate-order and layout knowledge lives in this package (`torch`, `keras`, `onnx`, `tf1`,
`cudnn`, `npz`, `frnn`); the layers only know the canonical gate-named form. Every loader returns
a ready `fastrnn.LSTM`/`GRU` (or, for a file with several recurrent layers, a dict name -> layer
in model order) whose outputs match the source framework's. Loading never executes code from a
file. Optional dependencies are imported only by the functions that need them.
"""
import io as _io
import os
import zipfile

FORMATS = ("npz", "frnn", "torch", "safetensors", "keras", "onnx", "tf1")
_SAVE_FORMATS = {".npz": "npz", ".frnn": "frnn", ".pt": "torch", ".pth": "torch",
                 ".safetensors": "safetensors", ".onnx": "onnx", ".keras": "keras"}
SAVE_FORMATS = ("npz", "frnn", "torch", "safetensors", "onnx", "keras")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def from_torch(source, *, name=None, dtype=None):
    """One layer from PyTorch weights.

    Args:
        source: an `nn.LSTM` / `nn.GRU` / `nn.LSTMCell` / `nn.GRUCell`, a module containing
            them, a state_dict (tensors or numpy arrays), or a `.pt` / `.pth` / `.safetensors`
            path. Files are read with `weights_only` loading: no code in them runs.
        name: the attribute path (state_dict key prefix) of the layer to load when the source
            holds several, e.g. `"encoder.rnn"`.
        dtype: "float32" or "float64"; by default that of the weights.

    Returns:
        A `fastrnn.LSTM` or `fastrnn.GRU` whose outputs match the PyTorch module's.

    Raises:
        ValueError: the source holds several recurrent layers and `name` is None (the message
            lists them; `fastrnn.load_all` returns them all), or malformed weights.
        TypeError: an object that is none of the above.

    Example:
        >>> lstm = fastrnn.from_torch(torch.nn.LSTM(8, 16, batch_first=True))
    """
    _expect_format(source, ("torch", "safetensors"), "from_torch")
    from .torch import from_torch as load
    return _one(load(source, name=name, dtype=dtype), source, "name")


def from_keras(source, name=None, *, dtype=None):
    """One layer from Keras weights.

    Args:
        source: a Keras LSTM / GRU / Bidirectional layer or a model containing them, or a
            `.keras`, `.weights.h5` or legacy `.h5` path (Keras 2 or 3). Files are read
            without Keras and without running code.
        name: the Keras layer name to load when the source holds several.
        dtype: "float32" or "float64"; by default that of the weights.

    Returns:
        A `fastrnn.LSTM` or `fastrnn.GRU` with Keras' semantics (`masked_output="carry"`).

    Raises:
        ValueError: several recurrent layers and no `name` (the message lists them), an
            unsupported layer asked for by name (the message says why), malformed files.

    Example:
        >>> gru = fastrnn.from_keras("model.keras", name="gru")
    """
    _expect_format(source, ("keras",), "from_keras")
    from .keras import from_keras as load
    return _one(load(source, name=name, dtype=dtype), source, "name")


def from_onnx(source, node=None, *, dtype=None):
    """One layer from the LSTM / GRU nodes of an ONNX model.

    Args:
        source: a path, the model's bytes or an `onnx.ModelProto`. LSTM / GRU nodes inside
            Loop / Scan / If subgraphs and primitive-op cells are found too.
        node: the node name (or fastrnn layer name) to load when the model holds several.
        dtype: "float32" or "float64"; by default that of the weights.

    Returns:
        A `fastrnn.LSTM` or `fastrnn.GRU` whose outputs match ONNX Runtime's.

    Raises:
        ValueError: several recurrent nodes and no `node` (the message lists them), nodes or
            attributes fastrnn cannot run (named in the message), malformed models.

    Example:
        >>> lstm = fastrnn.from_onnx("model.onnx")
    """
    _expect_format(source, ("onnx",), "from_onnx")
    from .onnx import from_onnx as load
    return _one(load(source, node=node, dtype=dtype), source, "node")


def from_tf_checkpoint(path, scope=None, forget_bias=None, *, dtype=None, cell_clip=None,
                       proj_clip=None):
    """One layer from the RNN cells of a TensorFlow 1 checkpoint, read without TensorFlow.

    Args:
        path: the checkpoint prefix, its `.index` file or a data file.
        scope: the variable scope of the layer to load when the checkpoint holds several.
        forget_bias: LSTM forget bias added at run time by TF's cells (a constructor constant
            not stored in the file); by default the cell's own default (1.0, or 0.0 for
            cudnn_compatible_lstm_cell).
        dtype: "float32" or "float64"; by default that of the weights.
        cell_clip, proj_clip: LSTMCell's values, which live in the graph, not the checkpoint.

    Returns:
        A `fastrnn.LSTM` or `fastrnn.GRU` matching `dynamic_rnn(sequence_length=...)`.

    Raises:
        ValueError: several layers and no `scope` (the message lists them), malformed files.

    Example:
        >>> lstm = fastrnn.from_tf_checkpoint("ckpt/model.ckpt-1000")
    """
    _expect_format(path, ("tf1",), "from_tf_checkpoint")
    from .tf1 import from_tf_checkpoint as load
    return _one(load(path, scope=scope, forget_bias=forget_bias, dtype=dtype,
                     cell_clip=cell_clip, proj_clip=proj_clip), path, "scope")


def _label(source):
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "the given bytes"
    return f"the given {type(source).__name__}"


def _expect_format(source, formats, function):
    """A file given to the wrong loader is named for what it is (the right loader's own
    errors are more precise for damaged files, so an unrecognised file goes on to it)."""
    if not isinstance(source, (str, os.PathLike)) or not os.path.exists(source):
        return
    try:
        found = detect_format(source)
    except (ValueError, OSError):
        return
    if found not in formats:
        raise ValueError(f"{_label(source)} is a {_FORMAT_NAMES[found]} file, not what "
                         f"{function}() reads; fastrnn.load() reads every supported format")


_FORMAT_NAMES = {"npz": "fastrnn .npz", "frnn": "fastrnn .frnn", "torch": "PyTorch",
                 "safetensors": "safetensors", "keras": "Keras", "onnx": "ONNX",
                 "tf1": "TensorFlow checkpoint"}


def _one(loaded, source, keyword):
    """Loaders return a dict for a source with several layers: `load` and `from_*` return one."""
    if not isinstance(loaded, dict):
        return loaded
    if len(loaded) == 1:
        return next(iter(loaded.values()))
    raise ValueError(f"{_label(source)} holds {len(loaded)} recurrent layers "
                     f"({', '.join(loaded)}): choose one with {keyword}=..., or load them all "
                     f"with fastrnn.load_all()")


def _as_dict(loaded):
    if isinstance(loaded, dict):
        return dict(loaded)
    return {loaded.name or "layer": loaded}


def _in_memory_format(source):
    """The format of an in-memory model object, or None for paths and bytes."""
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        return None
    module = type(source).__module__.split(".")[0]
    if module in ("onnx",):
        return "onnx"
    if module == "keras" or module == "tf_keras":
        return "keras"
    if module == "torch" or isinstance(source, dict):
        return "torch"
    if hasattr(source, "named_modules") and hasattr(source, "state_dict"):
        return "torch"  # a user's nn.Module subclass
    if hasattr(source, "get_weights") and hasattr(source, "layers"):
        return "keras"  # a user's keras.Model subclass
    raise TypeError(f"cannot load from a {type(source).__name__}: give a path, the file's "
                    "bytes, a PyTorch module or state_dict, a Keras model or layer, or an "
                    "onnx.ModelProto")


def load_all(source, *, dtype=None, freeze=False):
    """Every recurrent layer of a file or model.

    Args:
        source: any file `fastrnn.load` reads (path or bytes), or an in-memory PyTorch module /
            state_dict, Keras model / layer or `onnx.ModelProto`.
        dtype: "float32" or "float64"; by default that of the weights.
        freeze: True returns every layer frozen (`layer.freeze()`).

    Returns:
        dict: layer name -> `fastrnn.LSTM` / `GRU`, in model order; always a dict, also for a
        file holding one layer (fastrnn's own `.npz` / `.frnn`: its name, or "layer").

    Example:
        >>> for name, layer in fastrnn.load_all("model.keras").items():
        ...     print(name, layer)
    """
    layers = _load_all(source, dtype)
    if freeze:
        for layer in layers.values():
            layer.freeze()
    return layers


def _load_all(source, dtype):
    fmt = _in_memory_format(source)
    if fmt == "torch":
        from .torch import from_torch as load
        return _as_dict(load(source, dtype=dtype))
    if fmt == "keras":
        from .keras import from_keras as load
        return _as_dict(load(source, dtype=dtype))
    if fmt == "onnx":
        from .onnx import from_onnx as load
        return _as_dict(load(source, dtype=dtype))
    return _as_dict(_load_any(source, None, dtype))


def load_weights(source):
    """Every weight array of a file or model, recurrent or not (embeddings, dense heads), as
    the source names them.

    Args:
        source: as for `load_all`.

    Returns:
        dict: name -> numpy array. Names are the source's own: PyTorch state_dict keys
        ("embedding.weight"), Keras "<layer>/<weight>" ("dense/kernel"), ONNX initializer
        names, TF variable names; fastrnn's `.npz` / `.frnn` give the layer's `state_dict()`
        keys.

    Example:
        >>> w = fastrnn.load_weights("model.pt"); w["embedding.weight"].shape
        (1000, 64)
    """
    import importlib
    fmt = _in_memory_format(source)
    if fmt is None:
        fmt = detect_format(source)
    if fmt in ("npz", "frnn"):
        return dict(_load_any(source, None, None).state_dict())
    module = {"safetensors": "torch"}.get(fmt, fmt)
    return importlib.import_module(f"{__name__}.{module}").all_weights(source)


def _frnn():
    import importlib
    try:
        frnn = importlib.import_module(__name__ + ".frnn")
    except ModuleNotFoundError as exc:
        if exc.name != __name__ + ".frnn":
            raise
        raise ImportError("the .frnn format needs the module fastrnn.io.frnn, which this build "
                          "of fastrnn does not include") from exc
    return frnn


def detect_format(path_or_bytes):
    """The format of a file, from its content (never its extension).

    Args:
        path_or_bytes: a path (a TF checkpoint may be named by its prefix or its data file), or
            the file's bytes.

    Returns:
        str: "npz", "frnn", "torch", "safetensors", "keras" (.keras and .h5), "onnx" or "tf1", as
        `fastrnn.load` and `fastrnn inspect` name them.

    Raises:
        ValueError: the content is none of the supported formats, or a damaged zip file.

    Example:
        >>> fastrnn.io.detect_format("model.onnx")  # doctest: +SKIP
        'onnx'
    """
    from ._common import read_source
    path = None
    if not isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        path = os.fspath(path_or_bytes)
        if not os.path.exists(path) and os.path.exists(path + ".index"):
            return "tf1"  # a TF checkpoint prefix
        prefix, sep, shard = path.rpartition(".data-")
        if sep and os.path.exists(prefix + ".index") and shard[:5].isdigit():
            return "tf1"  # a TF checkpoint's data file: its index says what is in it
    data, label = read_source(path_or_bytes)
    return _detect(data, label)


def _detect(data, label):
    from .tf1 import is_tf_index
    from .torch import is_safetensors
    if data[:4] == b"FRNN":
        return "frnn"
    if data[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(_io.BytesIO(data)).namelist()
        except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError) as exc:
            raise ValueError(f"{label}: a damaged or truncated zip file ({exc})") from exc
        if "__config__.npy" in names:
            return "npz"
        if "config.json" in names and "model.weights.h5" in names:
            return "keras"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch"
        raise ValueError(f"{label}: a zip file that is neither a fastrnn .npz, a .keras model "
                         f"nor a PyTorch file (members {names[:5]})")
    if data[:8] == _HDF5_SIGNATURE:
        return "keras"
    if is_tf_index(data):
        return "tf1"
    if is_safetensors(data):
        return "safetensors"
    if data[:1] == b"\x80":  # a bare pickle stream: torch's legacy format
        return "torch"
    if data[:1] == b"\x08":  # ModelProto field 1 (ir_version, varint) comes first
        return "onnx"
    raise ValueError(f"{label}: unknown file format (not fastrnn .npz/.frnn, PyTorch .pt, "
                     "safetensors, Keras .keras/.h5, ONNX or a TF checkpoint index)")


def load(path, *, name=None, dtype=None, freeze=False):
    """One layer from any supported file; the format is detected from the content, never the
    extension (fastrnn `.npz` / `.frnn`, PyTorch `.pt` / `.safetensors`, Keras `.keras` /
    `.h5`, ONNX, TF1 checkpoints).

    Args:
        path: a path, or the file's bytes.
        name: the layer to load when the file holds several (Keras layer name, PyTorch
            attribute path, ONNX node name, TF variable scope).
        dtype: "float32" or "float64"; by default that of the weights.
        freeze: True returns the layer frozen (`layer.freeze()`: weights packed once and
            read-only; for inference servers).

    Returns:
        A `fastrnn.LSTM` or `fastrnn.GRU`, whatever the file holds (`load_all` returns a dict
        of every layer, `load_weights` every array).

    Raises:
        ValueError: several recurrent layers and no `name` (the message lists them), an
            unknown or malformed file (the message says what was expected).

    Example:
        >>> lstm = fastrnn.load("lstm.npz")
    """
    fmt = detect_format(path)
    layer = _one(_load_any(path, name, dtype, fmt), path, "name")
    return layer.freeze() if freeze else layer


def _load_any(path, name, dtype, fmt=None):
    """What the format module returns: a layer, or a dict name -> layer."""
    fmt = fmt or detect_format(path)
    if fmt == "npz":
        from .npz import load_npz
        return load_npz(path, dtype=dtype)
    if fmt == "frnn":
        layer = _frnn().load_frnn(path)
        return layer if dtype is None else _retype(layer, dtype)
    if fmt in ("torch", "safetensors"):
        from .torch import from_torch as load
        return load(path, name=name, dtype=dtype)
    if fmt == "keras":
        from .keras import from_keras as load
        return load(path, name=name, dtype=dtype)
    if fmt == "onnx":
        from .onnx import from_onnx as load
        return load(path, node=name, dtype=dtype)
    from .tf1 import from_tf_checkpoint as load
    return load(path, scope=name, dtype=dtype)


def _retype(layer, dtype):
    """The same layer in another dtype (a .frnn file has one): through the npz form, which
    keeps every property."""
    import tempfile

    from .npz import load_npz, save_npz
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.npz")
        save_npz(layer, path)
        return load_npz(path, dtype=dtype)


def save(layer, path, format=None, **options):
    """Write a layer to a file.

    Args:
        layer: a `fastrnn.LSTM` or `fastrnn.GRU`.
        path: where to write.
        format: "npz" (fastrnn's own, keeps everything), "frnn" (the C runtime's file),
            "torch" (`.pt`: an nn.LSTM / nn.GRU state_dict), "safetensors", "onnx" or "keras"
            (a `.keras` model, needs Keras). By default the extension of `path` decides:
            .npz, .frnn, .pt / .pth, .safetensors, .onnx, .keras.
        **options: passed to the writer; ONNX takes `sequence_lens=True` (an int32 (batch,)
            input for ragged batches).

    Raises:
        ValueError: an extension that names no format and no `format`, an unknown format,
            options the format does not take, or a layer property the format cannot hold
            (the message names it and a format that keeps it).

    Example:
        >>> fastrnn.save(lstm, "lstm.onnx", sequence_lens=True)
    """
    if format is None:
        ext = os.path.splitext(os.fspath(path))[1].lower()
        format = _SAVE_FORMATS.get(ext)
        if format is None:
            raise ValueError(f"cannot tell the format from the extension of {os.fspath(path)} "
                             f"({ext or 'none'}); use one of {', '.join(_SAVE_FORMATS)} or pass "
                             f"format= (one of {', '.join(SAVE_FORMATS)})")
    if format not in SAVE_FORMATS:
        raise ValueError(f"unknown format {format!r}; choose from {', '.join(SAVE_FORMATS)}")
    if options and format != "onnx":
        raise ValueError(f"the {format} format takes no options ({', '.join(options)}); "
                         "sequence_lens applies to onnx")
    quantization = getattr(layer, "quantization", None)
    if quantization and format not in ("npz", "frnn"):
        raise ValueError(f"{layer!r} has {layer.quantization} weights, which the {format} "
                         "format cannot hold: save it as .npz or .frnn, or save the float "
                         "layer it was quantized from")
    if format == "npz":
        from .npz import save_npz
        save_npz(layer, path)
    elif format == "frnn":
        _frnn().save_frnn(layer, path)
    elif format == "torch":
        from .torch import save_pt
        save_pt(layer, path)
    elif format == "safetensors":
        from .torch import save_safetensors
        save_safetensors(layer, path)
    elif format == "onnx":
        from .onnx import save_onnx
        save_onnx(layer, path, **options)
    else:
        from .keras import save_keras
        save_keras(layer, path)


def convert(source, out, *, format=None, name=None, quantize=None, **options):
    """Load one layer from `source` (any file `load` reads) and write it to `out` (see `save`
    for `format` and `options`).

    Args:
        source: the file to read.
        out: the file to write; its extension names the format unless `format` is given.
        format: as for `save`.
        name: the layer to convert when `source` holds several.
        quantize: "int8" or "bf16" writes `layer.quantize(quantize)` (npz or frnn), None the
            layer as read.

    Returns:
        The layer that was written.

    Raises:
        ValueError: as for `load` and `save`.

    Example:
        >>> fastrnn.convert("lstm_sd.pt", "lstm.onnx", sequence_lens=True)
    """
    layer = load(source, name=name)
    if quantize is not None:
        layer = layer.quantize(quantize)
    save(layer, out, format=format, **options)
    return layer


def inspect(path):
    """What `fastrnn inspect FILE` prints: [(name, description)] of every recurrent layer in a
    file, in model order. The description names the file's own gate order next to fastrnn's;
    a layer fastrnn cannot run (e.g. a Keras Bidirectional with merge_mode="sum") is listed
    as "unsupported: <why>" instead of hiding the others.

    Args:
        path: any file `fastrnn.load` reads (a path, or the file's bytes).

    Returns:
        list of (str, str): (layer name, description) pairs.

    Raises:
        ValueError: the file is of no supported format, or malformed.

    Example:
        >>> for name, text in fastrnn.io.inspect("model.keras"):  # doctest: +SKIP
        ...     print(name, text)
    """
    import importlib

    from ._common import describe
    fmt = detect_format(path)
    if fmt == "keras":
        from .keras import describe_layers
        return [(name, text if why is None else f"unsupported: {why}")
                for name, text, why in describe_layers(path)]
    module = {"torch": "torch", "safetensors": "torch", "onnx": "onnx", "tf1": "tf1"}.get(fmt)
    orders = importlib.import_module(f"{__name__}.{module}").GATE_ORDER if module else {}
    layers = load_all(path)
    return [(name, describe(layer, orders.get(layer._cell))) for name, layer in layers.items()]


__all__ = ["from_torch", "from_keras", "from_onnx", "from_tf_checkpoint", "load", "load_all",
           "load_weights", "save", "convert", "inspect", "detect_format"]
