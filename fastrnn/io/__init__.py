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
                 ".safetensors": "safetensors", ".onnx": "onnx"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def from_torch(source, *, name=None, dtype=None):
    """nn.LSTM / nn.GRU module, state_dict (tensors or numpy), `.pt` or `.safetensors` file."""
    from .torch import from_torch as load
    return load(source, name=name, dtype=dtype)


def from_keras(source, name=None, *, dtype=None):
    """Keras layer or model, `.keras`, `.weights.h5`, legacy `.h5` (Keras 2 or 3)."""
    from .keras import from_keras as load
    return load(source, name=name, dtype=dtype)


def from_onnx(source, node=None, *, dtype=None):
    """LSTM / GRU nodes of an ONNX model (path, bytes or onnx.ModelProto)."""
    from .onnx import from_onnx as load
    return load(source, node=node, dtype=dtype)


def from_tf_checkpoint(path, scope=None, forget_bias=None, *, dtype=None, cell_clip=None,
                       proj_clip=None):
    """TF1 RNN cells from a checkpoint (prefix or `.index` path), read without TensorFlow.
    cell_clip / proj_clip: LSTMCell's values, which live in the graph, not the checkpoint."""
    from .tf1 import from_tf_checkpoint as load
    return load(path, scope=scope, forget_bias=forget_bias, dtype=dtype, cell_clip=cell_clip,
                proj_clip=proj_clip)


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
    """The format of a file, from its content (never its extension)."""
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


def load(path, *, name=None, dtype=None):
    """Load any supported file; the format is detected from its content."""
    fmt = detect_format(path)
    if fmt == "npz":
        from .npz import load_npz
        return load_npz(path, dtype=dtype)
    if fmt == "frnn":
        return _frnn().load_frnn(path)
    if fmt in ("torch", "safetensors"):
        return from_torch(path, name=name, dtype=dtype)
    if fmt == "keras":
        return from_keras(path, name=name, dtype=dtype)
    if fmt == "onnx":
        return from_onnx(path, node=name, dtype=dtype)
    return from_tf_checkpoint(path, scope=name, dtype=dtype)


def save(layer, path, format=None):
    """Write a layer: fastrnn `npz` (default), `frnn`, `torch` (.pt), `safetensors`, `onnx`.
    Without `format`, the extension of `path` decides (unknown extensions give npz)."""
    if format is None:
        ext = os.path.splitext(os.fspath(path))[1].lower()
        format = _SAVE_FORMATS.get(ext, "npz")
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
        save_onnx(layer, path)
    else:
        raise ValueError(f"unknown format {format!r}; choose from "
                         f"{sorted(set(_SAVE_FORMATS.values()))}")


def convert(source, out, *, format=None, name=None):
    """Load `source` (any supported file) and save it to `out` (see `save`). A file with several
    recurrent layers needs `name` to choose one."""
    layer = load(source, name=name)
    if isinstance(layer, dict):
        raise ValueError(f"{source} holds several recurrent layers {list(layer)}; "
                         "choose one with name=")
    save(layer, out, format=format)
    return layer


def inspect(path):
    """[(name, description)] of the recurrent layers in a file; the description names the
    file's own gate order next to fastrnn's."""
    import importlib

    from ._common import describe
    fmt = detect_format(path)
    module = {"torch": "torch", "safetensors": "torch", "keras": "keras", "onnx": "onnx",
              "tf1": "tf1"}.get(fmt)
    orders = importlib.import_module(f"{__name__}.{module}").GATE_ORDER if module else {}
    loaded = load(path)
    layers = loaded if isinstance(loaded, dict) else {loaded.name or "layer": loaded}
    return [(name, describe(layer, orders.get(layer._cell))) for name, layer in layers.items()]


__all__ = ["from_torch", "from_keras", "from_onnx", "from_tf_checkpoint", "load", "save",
           "convert", "inspect", "detect_format"]
