"""PyTorch: nn.LSTM / nn.GRU / nn.LSTMCell / nn.GRUCell modules (alone or inside a model), their
state_dicts, `.pt` files and `.safetensors` files.

Layout (torch/nn/modules/rnn.py; identical to cuDNN's canonical one): for layer k and direction
suffix "" / "_reverse", `weight_ih_l{k}{sfx}` (G*H, I), `weight_hh_l{k}{sfx}` (G*H, H),
`bias_ih_l{k}{sfx}`, `bias_hh_l{k}{sfx}` (G*H,); row blocks LSTM i,f,g,o and GRU r,z,n; the GRU
`bias_hh` of n sits inside the reset product (fastrnn reset_after=True). nn.LSTMCell /
nn.GRUCell hold the same four tensors without the `_l0` suffix (one layer, one direction).

`.pt` files are read with `torch.load(weights_only=True)` only, so a file can never run code; a
whole pickled module (`torch.save(model)`) or a TorchScript archive is refused with a message
saying what to pass instead. `.safetensors` files are parsed here (8-byte little-endian header
length, JSON header, raw little-endian data) and need neither torch nor the safetensors package.

Exports (`to_state_dict`, `save_pt`, `save_safetensors`) hold what nn.LSTM / nn.GRU hold, plus
fastrnn's layer settings that a state_dict has no tensor for (masked_output, name, dropout,
recurrent_dropout) as string metadata, which the loaders here read back: in `.safetensors` the
header's `__metadata__` map (keys "fastrnn.*"); in a state_dict (and `.pt`) the `_metadata`
attribute that torch's own state_dicts carry ({module path: {"version": 1}}), as the entry
"fastrnn" next to the root's "version" (torch's `load_state_dict` ignores it). Properties that
change PyTorch's own outputs and have no place in nn.LSTM / nn.GRU (reverse=True, GRU
reset_after=False, cell variants) are refused; masked_output="carry" is kept and warned about
(PyTorch outputs zeros at padded steps).
"""
import collections
import json
import math
import os
import re
import sys
import warnings

import numpy as np

from ._common import (DIRECTIONS, as_array, build, expect_shape, join_rows, read_source,
                      require, single_or_dict, split_rows)

GATE_ORDER = {"lstm": ("input", "forget", "cell", "output"),   # torch i, f, g, o
              "gru": ("reset", "update", "candidate")}         # torch r, z, n
_SUFFIX = {"forward": "", "backward": "_reverse"}
_WEIGHT_IH = re.compile(r"^(.*?)weight_ih_l(\d+)(_reverse)?$")
_CELL_WEIGHT_IH = re.compile(r"^(.*?)weight_ih$")  # nn.LSTMCell / nn.GRUCell
_CELL_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_RNN_KINDS = ("LSTM", "GRU", "LSTMCell", "GRUCell")
_UNSUPPORTED_KINDS = ("RNN", "RNNCell")

ACCEPTED = ("fastrnn.from_torch accepts an nn.LSTM, nn.GRU, nn.LSTMCell or nn.GRUCell, a module "
            "containing them (found by attribute path, e.g. 'encoder.rnn'), a state_dict (a dict "
            "of tensors or numpy arrays), or the path (or bytes) of a .pt / .pth / .safetensors "
            "file")


# ---------------------------------------------------------------------------------------------
# Loading

def from_torch(source, *, name=None, dtype=None):
    """Layer(s) from PyTorch weights.

    Args:
        source: an nn.LSTM / nn.GRU / nn.LSTMCell / nn.GRUCell (also scripted or traced), any
            nn.Module containing them (an Embedding + LSTM + Linear model, say), a state_dict
            (tensors or numpy arrays; nested dicts such as a training checkpoint are flattened
            with "."), or the path or bytes of a `.pt` / `.pth` (a saved state_dict) or
            `.safetensors` file.
        name: the attribute path of the layer to return when the source holds several: a
            module's `named_modules()` name, which is also its state_dict key prefix
            ("encoder.rnn"); "rnn" for weights without a prefix.
        dtype: "float32" or "float64"; by default float64 for float64 weights, float32
            otherwise.

    Returns:
        One `fastrnn.LSTM` / `GRU`, or for a source with several recurrent layers (and no
        `name`) a dict attribute path -> layer in module order. Outputs match torch's with
        packed sequences for `lengths` (masked_output="zero"); a cell's layer has one layer and
        direction, and its `step(x, (h, c))` is the cell's forward.

    Raises:
        TypeError: anything else (nn.RNN, a module without LSTM / GRU, a tensor, ...); the
            message lists what is accepted.
        ValueError: malformed weights, a whole pickled module or TorchScript archive (the
            message says what to pass instead), invalid fastrnn metadata.
        KeyError: `name` is not one of the layers found.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Embedding(100, 8), torch.nn.LSTM(8, 16))
        >>> fastrnn.io.torch.from_torch(model)          # the LSTM, at attribute path "1"
        LSTM(8, 16, name='1', dtype='float32')
    """
    module_kind = _torch_module_kind(source)
    if module_kind is not None:
        return single_or_dict(layers_from_module(source, dtype=dtype), name,
                              f"the {type(source).__name__}")
    if isinstance(source, dict) or (hasattr(source, "keys") and hasattr(source, "items")):
        return single_or_dict(layers_from_state_dict(source, dtype=dtype), name, "state_dict")
    if not isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        raise TypeError(f"cannot load PyTorch weights from a {_describe(source)}. {ACCEPTED}")
    data, label = read_source(source)
    if is_safetensors(data):
        sd = read_safetensors(data, label)
        meta = parse_metadata(safetensors_metadata(data, label), label)
    else:
        sd = read_pt(data, label)
        meta = None  # read from the state_dict's _metadata
    return single_or_dict(layers_from_state_dict(sd, dtype=dtype, metadata=meta,
                                                 what=label), name, label)


def _describe(obj):
    kind = type(obj)
    return kind.__name__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"


def _torch():
    return sys.modules.get("torch")  # a torch object can only exist if torch is imported


def _torch_module_kind(obj):
    """"module" for an nn.Module, None otherwise."""
    torch = _torch()
    return "module" if torch is not None and isinstance(obj, torch.nn.Module) else None


def _recurrent_kind(module):
    """"LSTM", "GRU", "LSTMCell", "GRUCell", "RNN", "RNNCell" or None for another module.
    Scripted and traced modules say what they were in `original_name`."""
    torch = _torch()
    nn = torch.nn
    if isinstance(module, nn.RNNBase):
        return {"LSTM": "LSTM", "GRU": "GRU"}.get(module.mode, "RNN")
    for cls, kind in ((nn.LSTMCell, "LSTMCell"), (nn.GRUCell, "GRUCell"),
                      (nn.RNNCell, "RNNCell")):
        if isinstance(module, cls):
            return kind
    if isinstance(module, torch.jit.ScriptModule):
        kind = getattr(module, "original_name", None)
        # a class of the user's own may share the name: torch's has torch's weights
        own_weights = "weight_ih" + ("" if str(kind).endswith("Cell") else "_l0")
        if kind in _RNN_KINDS + _UNSUPPORTED_KINDS and own_weights in module.state_dict():
            return kind
    return None


def layers_from_module(module, *, dtype=None):
    """Every nn.LSTM / nn.GRU / nn.LSTMCell / nn.GRUCell in `module` (itself included), as
    {attribute path: layer} in `named_modules()` order; the module itself is "rnn" (as
    weights without a state_dict prefix are). Raises TypeError when there are none."""
    found, unsupported = {}, []
    for path, sub in module.named_modules():
        kind = _recurrent_kind(sub)
        if kind in _UNSUPPORTED_KINDS:
            unsupported.append(f"nn.{kind} at {path!r}" if path else f"nn.{kind}")
        elif kind is not None:
            state = sub.state_dict()
            if kind.endswith("Cell"):
                state = {k + "_l0": v for k, v in state.items() if k in _CELL_KEYS}
            found[path or "rnn"] = _layer_from_prefix(
                state, "", dtype, key_prefix=path + "." if path else "",
                cell=kind.endswith("Cell"), name=path or None)
    if not found:
        why = (f"{' and '.join(unsupported)} is not supported (fastrnn runs LSTM and GRU cells)"
               if unsupported else "it contains no nn.LSTM, nn.GRU, nn.LSTMCell or nn.GRUCell")
        raise TypeError(f"cannot load a {_describe(module)}: {why}. {ACCEPTED}")
    return found


def layers_from_state_dict(state, *, dtype=None, metadata=None, what="state_dict"):
    """Every torch RNN found in a flat (or nested) state_dict, as {prefix: layer} in key order
    ("rnn" for keys without a prefix). nn.LSTMCell / nn.GRUCell keys (`weight_ih` without
    `_l0`) give one-layer layers. `metadata`: parsed fastrnn metadata (`parse_metadata`) for the
    unprefixed layer; by default read from the state_dict's `_metadata` attribute."""
    by_module = {"": metadata} if metadata is not None else _state_dict_metadata(state, what)
    flat = _flatten(state, error=TypeError if what == "state_dict" else ValueError)
    prefixes, cell_prefixes = [], set()
    for key in flat:
        m = _WEIGHT_IH.match(key)
        if m and m.group(1) not in prefixes:
            prefixes.append(m.group(1))
            continue
        m = _CELL_WEIGHT_IH.match(key)
        if m and m.group(1) + "weight_hh" in flat and m.group(1) not in prefixes:
            prefixes.append(m.group(1))
            cell_prefixes.add(m.group(1))
    if not prefixes:
        raise ValueError("no nn.LSTM / nn.GRU weights (weight_ih_l0 ...) or nn.LSTMCell / "
                         f"nn.GRUCell weights (weight_ih, weight_hh) in {what}; "
                         f"keys: {list(flat)[:10]}")
    layers = {}
    for p in prefixes:
        config = {"name": p.rstrip(".") or None, **by_module.get(p.rstrip("."), {})}
        if p in cell_prefixes:
            own = {k + "_l0": flat[p + k] for k in _CELL_KEYS if p + k in flat}
            layer = _layer_from_prefix(own, "", dtype, key_prefix=p, cell=True, **config)
        else:
            layer = _layer_from_prefix(flat, p, dtype, **config)
        layers[p.rstrip(".") or "rnn"] = layer
    return layers


def _flatten(state, prefix="", error=TypeError):
    out = {}
    for key, value in state.items():
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            key = str(key)  # an optimizer's state in a training checkpoint: {0: {...}}
        if not isinstance(key, str):
            raise error(f"state_dict keys must be strings, got {key!r:.80}")
        if hasattr(value, "keys") and hasattr(value, "items"):
            out.update(_flatten(value, f"{prefix}{key}.", error))
        else:
            out[prefix + key] = value
    return out


def _array(a, what):
    """A numpy array of a tensor or array; half-precision tensors (which numpy lacks for
    bfloat16) widen to float32, which holds each of their values exactly."""
    torch = _torch()
    if torch is not None and isinstance(a, torch.Tensor):
        a = a.detach()
        if a.is_quantized:
            a = a.dequantize()
        a = a.cpu()
        if a.is_floating_point() and a.dtype not in (torch.float32, torch.float64):
            a = a.to(torch.float32)
        return as_array(a.numpy(), what)
    a = as_array(a, what)
    return a.astype(np.float32) if a.dtype == np.float16 else a


def _layer_from_prefix(flat, prefix, dtype, *, key_prefix=None, cell=False, **config):
    """The layer whose tensors sit under `prefix` in `flat`. With cell=True the keys were
    renamed from nn.LSTMCell's (`weight_ih` -> `weight_ih_l0`): messages use the original
    names, under `key_prefix`."""
    shown = key_prefix if key_prefix is not None else prefix

    def label(key):  # the tensor's name as the source spells it
        return shown + (key[:-3] if cell else key)

    own = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)
           and re.match(r"^(weight|bias)_(ih|hh|hr)_l\d+(_reverse)?$", k[len(prefix):])}

    def need(key):
        if key not in own:
            raise ValueError(f"missing tensor {label(key)} in the state_dict")
        return _array(own[key], label(key))

    num_layers = 1 + max(int(_WEIGHT_IH.match(k).group(2)) for k in own if _WEIGHT_IH.match(k))
    bidirectional = any(k.endswith("_reverse") for k in own)
    hh = need("weight_hh_l0")
    proj_size = 0
    if "weight_hr_l0" in own:  # nn.LSTM(proj_size=P): weight_hr (P, H), weight_hh (4H, P)
        hr = need("weight_hr_l0")
        if hr.ndim != 2 or hr.shape[0] == 0 or hr.shape[1] == 0:
            raise ValueError(f"{label('weight_hr_l0')} has shape {hr.shape}, expected (P, H)")
        proj_size, H = hr.shape
        if hh.ndim != 2 or hh.shape != (4 * H, proj_size):
            raise ValueError(f"{label('weight_hh_l0')} has shape {hh.shape}, expected "
                             f"{(4 * H, proj_size)} with weight_hr_l0 {hr.shape}")
    elif hh.ndim != 2 or hh.shape[1] == 0 or hh.shape[0] % hh.shape[1]:
        raise ValueError(f"{label('weight_hh_l0')} has shape {hh.shape}, expected (G*H, H)")
    else:
        H = hh.shape[1]
    G = hh.shape[0] // H
    if G not in (3, 4):
        raise ValueError(f"{label('weight_hh_l0')} has {G} gate blocks of {H} rows; an LSTM "
                         "has 4 and a GRU 3")
    kind = "lstm" if G == 4 else "gru"
    use_bias = "bias_ih_l0" in own or "bias_hh_l0" in own
    dirs = DIRECTIONS[:2 if bidirectional else 1]
    sd = {}
    input_size = None
    for k in range(num_layers):
        for direction in dirs:
            sfx = f"_l{k}{_SUFFIX[direction]}"
            W, R = need("weight_ih" + sfx), need("weight_hh" + sfx)
            b_w = b_r = None
            if use_bias:
                b_w, b_r = need("bias_ih" + sfx), need("bias_hh" + sfx)
            if k == 0:
                input_size = W.shape[-1] if W.ndim == 2 else None
            split_rows(kind, GATE_ORDER[kind], W, R, b_w, b_r, H,
                       f"layer{k}.{direction}", sd, proj_size=proj_size)
            if proj_size:
                hr = need("weight_hr" + sfx)
                expect_shape(hr, (proj_size, H), label("weight_hr" + sfx))
                sd[f"layer{k}.{direction}.projection"] = hr.T
    if proj_size:
        config["proj_size"] = proj_size
    return build(kind, input_size, H, sd, dtype=dtype, num_layers=num_layers,
                 bidirectional=bidirectional, use_bias=use_bias, **config)


def read_pt(data, label="<bytes>"):
    """A `.pt` file's state_dict, loaded with torch.load(weights_only=True): never unpickles
    code. A whole pickled module (`torch.save(model)`) or a TorchScript archive
    (`torch.jit.save`) raises ValueError saying what to pass instead."""
    import io
    torch = require("torch", "torch")
    members = _zip_members(data)
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in members):
        raise ValueError(
            f"{label}: a TorchScript archive (torch.jit.save), which fastrnn does not load: its "
            "weights come with code, and fastrnn runs no code from a file. If you trust it, "
            "load it yourself and pass the module: fastrnn.from_torch(torch.jit.load(path)); or "
            "save the weights alone: torch.save(model.state_dict(), path)")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise ValueError(_pt_error(data, members, label, exc)) from exc
    if not hasattr(obj, "keys"):
        raise ValueError(f"{label}: holds a {type(obj).__name__}, expected a state_dict "
                         "(torch.save(model.state_dict(), path))")
    return obj


def _zip_members(data):
    import io
    import zipfile
    if data[:4] != b"PK\x03\x04":
        return []
    try:
        return zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError):
        return []


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _plain(message, limit=600):
    """A torch message without terminal escape codes, on one line, at most `limit` chars."""
    text = " ".join(_ANSI.sub("", message).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _pt_error(data, members, label, exc):
    """The message for a .pt file torch.load(weights_only=True) refused."""
    pickled = data
    for n in members:
        if n == "data.pkl" or n.endswith("/data.pkl"):
            import io
            import zipfile
            try:
                pickled = zipfile.ZipFile(io.BytesIO(data)).read(n)
            except Exception:  # a damaged archive: nothing more to say than torch's message
                pickled = b""
            break
    names, strings = _pickle_globals(pickled)
    names = [g for g in names if not _is_tensor_global(g)]
    is_module = (any(g.startswith("torch.nn.modules.") for g in names)
                 or {"_modules", "_parameters"} <= strings)
    if is_module:
        return (f"{label}: a whole pickled module (torch.save(model) writes the model's classes "
                f"into the file: {', '.join(names[:6])}), not a state_dict of tensors. fastrnn "
                "loads .pt files weights-only (torch.load(weights_only=True)) and never "
                "unpickles code from a file. Either load the model yourself if you trust the "
                "file (model = torch.load(path, weights_only=False)) and pass the module: "
                "fastrnn.from_torch(model); or save its weights instead: "
                "torch.save(model.state_dict(), path)")
    if names:
        return (f"{label}: not a weights-only PyTorch file: it pickles Python objects "
                f"({', '.join(names[:6])}), and fastrnn loads .pt files weights-only "
                "(torch.load(weights_only=True)), never unpickling code. Save a state_dict of "
                "tensors: torch.save(model.state_dict(), path). (torch said: "
                f"{type(exc).__name__}: {_plain(str(exc))})")
    return (f"{label}: not a loadable weights-only PyTorch file ({type(exc).__name__}: "
            f"{_plain(str(exc))})")


def _is_tensor_global(name):
    """Whether a pickled global is one of the helpers torch.save uses for tensors and
    state_dicts themselves (not worth naming in a message)."""
    return (name.startswith(("torch._utils.", "torch._tensor.", "torch.serialization."))
            or name.endswith("Storage")
            or name in ("collections.OrderedDict", "torch.Size", "torch.device",
                        "__builtin__.set", "builtins.set"))


_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
               "SHORT_BINUNICODE", "BINUNICODE8"}


def _pickle_globals(data, max_pickles=4):
    """The classes and functions a pickle stream refers to ("module.name"), and the strings it
    holds, read with pickletools (which only decodes opcodes: nothing is imported or run).
    torch's legacy format is several pickles in a row; the first `max_pickles` are read."""
    import pickletools
    names, strings = [], set()
    offset = 0
    for _ in range(max_pickles):
        if offset >= len(data):
            break
        memo, stack = {}, []  # stack: the recent string pushes, None for anything else
        end = None
        try:
            for op, arg, pos in pickletools.genops(data[offset:]):
                if op.name in _STRING_OPS:
                    value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
                    stack.append(value)
                    strings.add(value)
                elif op.name in ("BINGET", "LONG_BINGET", "GET"):
                    stack.append(memo.get(arg))
                elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                    memo[arg] = stack[-1] if stack else None
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = stack[-1] if stack else None
                elif op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                    stack.append(None)
                elif op.name == "STACK_GLOBAL":
                    if len(stack) >= 2 and isinstance(stack[-2], str) and \
                            isinstance(stack[-1], str):
                        names.append(f"{stack[-2]}.{stack[-1]}")
                    stack.append(None)
                elif op.name == "STOP":
                    end = pos + 1
                else:
                    stack.append(None)
        except Exception:  # not (or no longer) a pickle stream
            break
        if end is None:
            break
        offset += end
    return list(dict.fromkeys(names)), strings


# ---------------------------------------------------------------------------------------------
# fastrnn's metadata in exports

_META_KEYS = ("version", "masked_output", "name", "dropout", "recurrent_dropout")
META_VERSION = "1"
_MAX_META_VALUE = 4096


def export_metadata(layer):
    """{key: str} of the layer settings a state_dict has no tensor for."""
    meta = {"version": META_VERSION, "masked_output": layer.masked_output}
    if layer.name is not None:
        meta["name"] = str(layer.name)
    for what in ("dropout", "recurrent_dropout"):
        if getattr(layer, what):
            meta[what] = repr(float(getattr(layer, what)))
    return meta


def parse_metadata(meta, label):
    """Constructor keywords from fastrnn metadata ({key: str}, keys without "fastrnn."); every
    value is checked, since a file may say anything. {} for None or an empty map."""
    if not meta:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise ValueError(f"{label}: fastrnn metadata must map strings to strings")
    unknown = sorted(set(meta) - set(_META_KEYS))
    if unknown:
        raise ValueError(f"{label}: unknown fastrnn metadata {unknown} (written by a newer "
                         f"fastrnn?); this one reads {list(_META_KEYS)}")
    if meta.get("version") != META_VERSION:
        raise ValueError(f"{label}: fastrnn metadata version {meta.get('version')!r:.40} is not "
                         f"supported (this fastrnn reads version {META_VERSION})")
    config = {}
    if "masked_output" in meta:
        if meta["masked_output"] not in ("zero", "carry"):
            raise ValueError(f"{label}: fastrnn metadata masked_output must be 'zero' or "
                             f"'carry', got {meta['masked_output']!r:.40}")
        config["masked_output"] = meta["masked_output"]
    if "name" in meta:
        if len(meta["name"]) > _MAX_META_VALUE:
            raise ValueError(f"{label}: fastrnn metadata name is {len(meta['name'])} characters "
                             f"long (at most {_MAX_META_VALUE})")
        config["name"] = meta["name"]
    for what in ("dropout", "recurrent_dropout"):
        if what in meta:
            try:
                p = float(meta[what]) if len(meta[what]) <= 40 else math.nan
            except ValueError:
                p = math.nan
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{label}: fastrnn metadata {what} must be a number in [0, 1), "
                                 f"got {meta[what]!r:.40}")
            config[what] = p
    return config


def _state_dict_metadata(state, label):
    """{module path: parsed fastrnn metadata} from a state_dict's `_metadata` attribute, where
    torch keeps {module path: {"version": ...}} and an export adds "fastrnn" to its module's
    entry (the root's, ""): a key no module name can take over."""
    torch_meta = getattr(state, "_metadata", None)
    if not isinstance(torch_meta, dict):
        return {}
    out = {}
    for path, local in torch_meta.items():
        if not isinstance(local, dict) or "fastrnn" not in local:
            continue
        entry = local["fastrnn"]
        if not isinstance(entry, dict):
            raise ValueError(f"{label}: the state_dict's _metadata[{path!r:.80}]['fastrnn'] is "
                             f"a {type(entry).__name__}, expected a dict of strings")
        out[path] = parse_metadata(dict(entry), label)
    return out


# ---------------------------------------------------------------------------------------------
# safetensors, parsed by hand

_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
              "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
_ST_METADATA_PREFIX = "fastrnn."


def is_safetensors(data):
    if len(data) < 10:
        return False
    n = int.from_bytes(data[:8], "little")
    return 2 <= n <= len(data) - 8 and data[8:9] == b"{"


def _safetensors_header(data, label):
    """(header dict, data section) of a safetensors file."""
    if len(data) < 8:
        raise ValueError(f"{label}: truncated safetensors file ({len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError(f"{label}: safetensors header claims {n} bytes but the file has "
                         f"{len(data) - 8} after the length field (truncated or corrupt)")
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{label}: safetensors header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{label}: safetensors header is not a JSON object")
    return header, memoryview(data)[8 + n:]


def read_safetensors(data, label="<bytes>"):
    """{name: numpy array} of a safetensors file; every size and offset is checked. BF16
    tensors are widened to float32 (exactly: a bfloat16 is the top half of a float32)."""
    header, body = _safetensors_header(data, label)
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dt, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            shape = tuple(int(s) for s in shape)
            start, end = int(start), int(end)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{label}: malformed safetensors entry {key!r}") from exc
        if dt not in _ST_DTYPES:
            raise ValueError(f"{label}: tensor {key!r} has unsupported dtype {dt}")
        if any(s < 0 for s in shape) or not 0 <= start <= end <= len(body):
            raise ValueError(f"{label}: tensor {key!r} has offsets [{start}, {end}) outside the "
                             f"{len(body)}-byte data section (truncated or corrupt)")
        npdt = np.dtype(_ST_DTYPES[dt])
        if end - start != int(np.prod(shape, dtype=np.int64)) * npdt.itemsize:
            raise ValueError(f"{label}: tensor {key!r} has {end - start} bytes, but shape "
                             f"{shape} of {dt} needs {int(np.prod(shape)) * npdt.itemsize}")
        a = np.frombuffer(body[start:end], npdt).reshape(shape).copy()
        if dt == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[key] = a
    return out


def safetensors_metadata(data, label="<bytes>"):
    """fastrnn's entries of a safetensors file's `__metadata__` map, without the "fastrnn."
    prefix ({} when there are none). The format defines the map as strings to strings; any
    other content is refused."""
    header, _ = _safetensors_header(data, label)
    meta = header.get("__metadata__")
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError(f"{label}: the safetensors __metadata__ must map strings to strings")
    return {k[len(_ST_METADATA_PREFIX):]: v for k, v in meta.items()
            if k.startswith(_ST_METADATA_PREFIX)}


def write_safetensors(tensors, path, metadata=None):
    """Write {name: numpy array} as safetensors (float32/float64, little-endian), with
    `metadata` ({str: str}) as the header's `__metadata__`."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    rev = {v: k for k, v in _ST_DTYPES.items()}
    for key, a in tensors.items():
        a = np.ascontiguousarray(a)
        a = a.astype(a.dtype.newbyteorder("<"))
        blob = a.tobytes()
        header[key] = {"dtype": rev[a.dtype.str if a.dtype.str in rev else "<" + a.dtype.str[1:]],
                       "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # data starts 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for blob in blobs:
            f.write(blob)


# ---------------------------------------------------------------------------------------------
# Every tensor, recurrent or not

def all_weights(source):
    """Every tensor of a PyTorch source by its state_dict name, as numpy arrays.

    For the weights around the recurrent layers (embeddings, linear heads, norms) that
    `from_torch` does not turn into layers.

    Args:
        source: an nn.Module (its `state_dict()`: parameters and buffers), a state_dict
            (tensors or numpy arrays; nested dicts, e.g. a training checkpoint, are flattened
            with "." and integer keys written as digits), or the path or bytes of a `.pt` /
            `.pth` / `.safetensors` file (`.pt` read weights-only).

    Returns:
        dict: name -> numpy array, in the source's order, e.g. {"embedding.weight": (V, E),
        "lstm.weight_ih_l0": (4H, E), ..., "fc.bias": (C,)}. float32 and float64 tensors keep
        their dtype, as do integer and bool tensors; bfloat16, float16 (and float8) tensors are
        converted to float32, which represents each of their values exactly. Values that are
        not tensors (an epoch number, say) are left out.

    Raises:
        TypeError: a source of another kind. ValueError: an unreadable file (see `from_torch`).

    Example:
        >>> w = fastrnn.io.torch.all_weights(model)
        >>> w["embedding.weight"].shape
        (1000, 64)
    """
    if _torch_module_kind(source) is not None:
        state = source.state_dict()
    elif isinstance(source, dict) or (hasattr(source, "keys") and hasattr(source, "items")):
        state = source
    elif isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        data, label = read_source(source)
        state = read_safetensors(data, label) if is_safetensors(data) else read_pt(data, label)
    else:
        raise TypeError(f"cannot read PyTorch weights from a {_describe(source)}: give an "
                        "nn.Module, a state_dict or the path (or bytes) of a .pt / .pth / "
                        ".safetensors file")
    out = {}
    for key, value in _flatten_all(state).items():
        out[key] = _array(value, key)
    return out


def _flatten_all(state, prefix=""):
    """Every array-like leaf of nested dicts / lists under dotted names."""
    torch = _torch()
    out = {}
    items = state.items() if hasattr(state, "items") else enumerate(state)
    for key, value in items:
        name = f"{prefix}{key}"
        if hasattr(value, "keys") and hasattr(value, "items") or isinstance(value, (list, tuple)):
            out.update(_flatten_all(value, name + "."))
        elif isinstance(value, np.ndarray) and value.dtype.kind in "fiub" or \
                torch is not None and isinstance(value, torch.Tensor):
            out[name] = value
    return out


# ---------------------------------------------------------------------------------------------
# Exporting

def _check_representable(layer):
    keep = "fastrnn's .npz or .frnn keep it, ONNX too"
    if layer._cell == "gru" and not layer.reset_after:
        raise ValueError("PyTorch's GRU applies the reset gate after the recurrent matmul; a "
                         "GRU with reset_after=False cannot be represented in nn.GRU "
                         f"({keep})")
    if layer.reverse:
        raise ValueError("PyTorch has no unidirectional reverse-time RNN; a layer with "
                         f"reverse=True cannot be represented in nn.LSTM / nn.GRU ({keep})")
    other = [f for f in layer.variant_features if f != "proj_size"]
    if other:
        raise ValueError(f"PyTorch's nn.{layer._cell.upper()} has no {', '.join(other)}: "
                         f"{layer!r} cannot be represented (fastrnn's .npz or .frnn keep it)")


def _warn_if_carry(layer):
    if layer.masked_output == "carry":
        warnings.warn(
            f"{layer!r} has masked_output='carry', which PyTorch's modules cannot do: "
            f"nn.{layer._cell.upper()} outputs zeros at the padded steps of a packed sequence. "
            "The weights are exact and fastrnn reads masked_output back from this export's "
            "metadata, but PyTorch's outputs differ at padded steps (fastrnn's .npz or .frnn "
            "keep the setting for every reader)", UserWarning, stacklevel=_caller_level())


def _caller_level():
    """The warnings stacklevel of the first frame outside fastrnn (the user's call)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def _with_metadata(state, layer):
    """`state` as an OrderedDict carrying fastrnn's settings the way torch carries its own
    (`_metadata`; torch's load_state_dict ignores entries for no submodule)."""
    out = collections.OrderedDict(state)
    out._metadata = collections.OrderedDict(
        [("", {"version": 1, "fastrnn": export_metadata(layer)})])  # nn.LSTM's version is 1
    return out


def to_state_dict(layer):
    """The layer as an nn.LSTM / nn.GRU state_dict of numpy arrays.

    Keys as nn.LSTM / nn.GRU name them ("weight_ih_l0", ..., "weight_hr_l0" with proj_size);
    an LSTM's bias goes to bias_ih with bias_hh zero (only their sum acts). The returned
    OrderedDict carries the layer's masked_output, name, dropout and recurrent_dropout in its
    `_metadata` attribute (`_metadata[""]["fastrnn"]`), which `from_torch` reads back.

    Raises:
        ValueError: a property nn.LSTM / nn.GRU cannot express (reverse=True, GRU
            reset_after=False, cell variants other than proj_size); the message names it.

    Warns:
        UserWarning: masked_output="carry": PyTorch's modules output zeros at padded steps.

    Example:
        >>> sd = fastrnn.io.torch.to_state_dict(fastrnn.LSTM(8, 16)); sd["weight_ih_l0"].shape
        (64, 8)
    """
    _check_representable(layer)
    _warn_if_carry(layer)
    out = {}
    for k in range(layer.num_layers):
        for direction in DIRECTIONS[:layer.num_directions]:
            sfx = f"_l{k}{_SUFFIX[direction]}"
            W, R, b_w, b_r = join_rows(layer, GATE_ORDER[layer._cell], k, direction)
            out["weight_ih" + sfx], out["weight_hh" + sfx] = W, R
            if layer.use_bias:
                out["bias_ih" + sfx], out["bias_hh" + sfx] = b_w, b_r
            if getattr(layer, "proj_size", 0):
                out["weight_hr" + sfx] = layer.state_dict()[f"layer{k}.{direction}.projection"].T
    return _with_metadata(out, layer)


def to_torch(layer):
    """The layer as a torch state_dict (tensors) for nn.LSTM / nn.GRU; see `to_state_dict`
    (same keys, metadata, errors and warning)."""
    torch = require("torch", "torch")
    sd = to_state_dict(layer)
    out = collections.OrderedDict(
        (k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in sd.items())
    out._metadata = sd._metadata
    return out


def to_torch_module(layer):
    """A ready nn.LSTM / nn.GRU holding the layer's weights.

    batch_first=True, the layer's dtype, eval mode; stacked, bidirectional, proj_size and
    bias-free layers map to the module's own arguments. fastrnn's dropout settings
    (variational, training only) are not nn.LSTM's inter-layer dropout and are not carried.

    Raises:
        ValueError: a property nn.LSTM / nn.GRU cannot express (named in the message).

    Warns:
        UserWarning: masked_output="carry" (the module outputs zeros at padded steps).

    Example:
        >>> module = fastrnn.io.torch.to_torch_module(fastrnn.GRU(8, 16, num_layers=2))
        >>> module(torch.zeros(3, 5, 8))[0].shape
        torch.Size([3, 5, 16])
    """
    torch = require("torch", "torch")
    sd = to_torch(layer)  # checks representability first
    cls = torch.nn.LSTM if layer._cell == "lstm" else torch.nn.GRU
    module = cls(layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                 bias=layer.use_bias, batch_first=True, bidirectional=layer.bidirectional,
                 dtype=torch.float64 if layer.dtype == np.float64 else torch.float32,
                 **({"proj_size": layer.proj_size} if getattr(layer, "proj_size", 0) else {}))
    module.load_state_dict(sd)
    return module.eval()


def save_pt(layer, path):
    """Write the layer as a `.pt` nn.LSTM / nn.GRU state_dict (`torch.save`).

    Args:
        layer: a fastrnn.LSTM / GRU. path: the file to write.

    The file loads with `torch.load(path, weights_only=True)` into
    `nn.LSTM(...).load_state_dict`; fastrnn's settings ride in the state_dict's `_metadata`
    and come back with `fastrnn.load(path)`. Errors and warning: see `to_state_dict`.

    Example:
        >>> fastrnn.io.torch.save_pt(fastrnn.LSTM(8, 16), "lstm.pt")
    """
    torch = require("torch", "torch")
    torch.save(to_torch(layer), path)


def save_safetensors(layer, path):
    """Write the layer as a `.safetensors` nn.LSTM / nn.GRU state_dict (needs no torch).

    Args:
        layer: a fastrnn.LSTM / GRU. path: the file to write.

    fastrnn's settings ride in the header's `__metadata__` as "fastrnn.*" strings, next to
    {"format": "pt"}, and come back with `fastrnn.load(path)`; `safetensors.torch.load_file`
    gives the tensors for `nn.LSTM(...).load_state_dict`. Errors and warning: see
    `to_state_dict`.

    Example:
        >>> fastrnn.io.torch.save_safetensors(fastrnn.GRU(8, 16), "gru.safetensors")
    """
    sd = to_state_dict(layer)
    meta = {"format": "pt"}  # what the safetensors package writes for torch tensors
    meta.update({_ST_METADATA_PREFIX + k: v for k, v in export_metadata(layer).items()})
    write_safetensors(sd, path, metadata=meta)
