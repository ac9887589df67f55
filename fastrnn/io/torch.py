"""PyTorch: nn.LSTM / nn.GRU modules, their state_dicts, `.pt` files and `.safetensors` files.

Layout (torch/nn/modules/rnn.py; identical to cuDNN's canonical one): for layer k and direction
suffix "" / "_reverse", `weight_ih_l{k}{sfx}` (G*H, I), `weight_hh_l{k}{sfx}` (G*H, H),
`bias_ih_l{k}{sfx}`, `bias_hh_l{k}{sfx}` (G*H,); row blocks LSTM i,f,g,o and GRU r,z,n; the GRU
`bias_hh` of n sits inside the reset product (fastrnn reset_after=True).

`.pt` files are read with `torch.load(weights_only=True)` only, so a file can never run code.
`.safetensors` files are parsed here (8-byte little-endian header length, JSON header, raw
little-endian data) and need neither torch nor the safetensors package.
"""
import json
import re

import numpy as np

from ._common import (DIRECTIONS, as_array, build, expect_shape, join_rows, read_source,
                      require, single_or_dict, split_rows)

GATE_ORDER = {"lstm": ("input", "forget", "cell", "output"),   # torch i, f, g, o
              "gru": ("reset", "update", "candidate")}         # torch r, z, n
_SUFFIX = {"forward": "", "backward": "_reverse"}
_WEIGHT_IH = re.compile(r"^(.*?)weight_ih_l(\d+)(_reverse)?$")


# ---------------------------------------------------------------------------------------------
# Loading

def from_torch(source, *, name=None, dtype=None):
    """Layer(s) from an nn.LSTM / nn.GRU module, a state_dict (tensors or numpy), or the path
    (or bytes) of a `.pt` / `.safetensors` file.

    A state_dict holding several RNN modules (keys with different prefixes, e.g. "encoder."
    and "decoder.") gives a dict prefix -> layer; `name` picks one. Outputs match torch with
    packed sequences for `lengths` (masked_output="zero")."""
    if _is_torch_rnn(source):
        return _from_module(source, dtype)
    if hasattr(source, "keys"):
        return single_or_dict(layers_from_state_dict(source, dtype=dtype), name, "state_dict")
    data, label = read_source(source)
    if is_safetensors(data):
        sd = read_safetensors(data, label)
    else:
        sd = read_pt(data, label)
    return single_or_dict(layers_from_state_dict(sd, dtype=dtype), name, label)


def _is_torch_rnn(obj):
    import sys
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.RNNBase)


def _from_module(module, dtype):
    if module.mode not in ("LSTM", "GRU"):
        raise ValueError(f"only nn.LSTM and nn.GRU are supported, got {type(module).__name__} "
                         f"(mode {module.mode})")
    sd = {k: v for k, v in module.state_dict().items()}
    layers = layers_from_state_dict(sd, dtype=dtype)
    (layer,) = layers.values()
    return layer


def layers_from_state_dict(state, *, dtype=None):
    """Every torch RNN found in a flat state_dict, as {prefix: layer} in key order."""
    flat = _flatten(state)
    prefixes = []
    for key in flat:
        m = _WEIGHT_IH.match(key)
        if m and m.group(1) not in prefixes:
            prefixes.append(m.group(1))
    if not prefixes:
        raise ValueError("no nn.LSTM / nn.GRU weights (weight_ih_l0 ...) in this state_dict; "
                         f"keys: {list(flat)[:10]}")
    return {p.rstrip(".") or "rnn": _layer_from_prefix(flat, p, dtype) for p in prefixes}


def _flatten(state, prefix=""):
    out = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise TypeError(f"state_dict keys must be strings, got {key!r}")
        if hasattr(value, "keys"):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _layer_from_prefix(flat, prefix, dtype):
    own = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)
           and re.match(r"^(weight|bias)_(ih|hh|hr)_l\d+(_reverse)?$", k[len(prefix):])}
    num_layers = 1 + max(int(_WEIGHT_IH.match(k).group(2)) for k in own if _WEIGHT_IH.match(k))
    bidirectional = any(k.endswith("_reverse") for k in own)
    hh = as_array(_need(own, "weight_hh_l0", prefix), prefix + "weight_hh_l0")
    proj_size = 0
    if "weight_hr_l0" in own:  # nn.LSTM(proj_size=P): weight_hr (P, H), weight_hh (4H, P)
        hr = as_array(own["weight_hr_l0"], prefix + "weight_hr_l0")
        if hr.ndim != 2 or hr.shape[0] == 0 or hr.shape[1] == 0:
            raise ValueError(f"{prefix}weight_hr_l0 has shape {hr.shape}, expected (P, H)")
        proj_size, H = hr.shape
        if hh.ndim != 2 or hh.shape != (4 * H, proj_size):
            raise ValueError(f"{prefix}weight_hh_l0 has shape {hh.shape}, expected "
                             f"{(4 * H, proj_size)} with weight_hr_l0 {hr.shape}")
    elif hh.ndim != 2 or hh.shape[1] == 0 or hh.shape[0] % hh.shape[1]:
        raise ValueError(f"{prefix}weight_hh_l0 has shape {hh.shape}, expected (G*H, H)")
    else:
        H = hh.shape[1]
    G = hh.shape[0] // H
    if G not in (3, 4):
        raise ValueError(f"{prefix}weight_hh_l0 has {G} gate blocks of {H} rows; an LSTM has 4 "
                         "and a GRU 3")
    cell = "lstm" if G == 4 else "gru"
    use_bias = "bias_ih_l0" in own or "bias_hh_l0" in own
    dirs = DIRECTIONS[:2 if bidirectional else 1]
    sd = {}
    input_size = None
    for k in range(num_layers):
        for direction in dirs:
            sfx = f"_l{k}{_SUFFIX[direction]}"
            W = as_array(_need(own, "weight_ih" + sfx, prefix), prefix + "weight_ih" + sfx)
            R = as_array(_need(own, "weight_hh" + sfx, prefix), prefix + "weight_hh" + sfx)
            b_w = b_r = None
            if use_bias:
                b_w = as_array(_need(own, "bias_ih" + sfx, prefix), prefix + "bias_ih" + sfx)
                b_r = as_array(_need(own, "bias_hh" + sfx, prefix), prefix + "bias_hh" + sfx)
            if k == 0:
                input_size = W.shape[-1] if W.ndim == 2 else None
            split_rows(cell, GATE_ORDER[cell], W, R, b_w, b_r, H,
                       f"layer{k}.{direction}", sd, proj_size=proj_size)
            if proj_size:
                hr = as_array(_need(own, "weight_hr" + sfx, prefix), prefix + "weight_hr" + sfx)
                expect_shape(hr, (proj_size, H), prefix + "weight_hr" + sfx)
                sd[f"layer{k}.{direction}.projection"] = hr.T
    extra = {"proj_size": proj_size} if proj_size else {}
    return build(cell, input_size, H, sd, dtype=dtype, num_layers=num_layers,
                 bidirectional=bidirectional, use_bias=use_bias, name=prefix.rstrip(".") or None,
                 **extra)


def _need(own, key, prefix):
    if key not in own:
        raise ValueError(f"missing tensor {prefix}{key} in the state_dict")
    return own[key]


def read_pt(data, label="<bytes>"):
    """A `.pt` file's tensors, loaded with torch.load(weights_only=True) (never unpickles code)."""
    import io
    torch = require("torch", "torch")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise ValueError(f"{label}: not a loadable weights-only PyTorch file "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                         ) from exc
    if not hasattr(obj, "keys"):
        raise ValueError(f"{label}: holds a {type(obj).__name__}, expected a state_dict")
    return obj


# ---------------------------------------------------------------------------------------------
# safetensors, parsed by hand

_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
              "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1"}


def is_safetensors(data):
    if len(data) < 10:
        return False
    n = int.from_bytes(data[:8], "little")
    return 2 <= n <= len(data) - 8 and data[8:9] == b"{"


def read_safetensors(data, label="<bytes>"):
    """{name: numpy array} of a safetensors file; every size and offset is checked."""
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
    body = memoryview(data)[8 + n:]
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


def write_safetensors(tensors, path):
    """Write {name: numpy array} as safetensors (float32/float64, little-endian)."""
    header, blobs, offset = {}, [], 0
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
# Exporting

def _check_representable(layer):
    if layer._cell == "gru" and not layer.reset_after:
        raise ValueError("PyTorch's GRU applies the reset gate after the recurrent matmul; a "
                         "GRU with reset_after=False cannot be represented (export to ONNX "
                         "instead)")
    if layer.reverse:
        raise ValueError("PyTorch has no unidirectional reverse-time RNN; a layer with "
                         "reverse=True cannot be represented (export to ONNX instead)")
    other = [f for f in layer.variant_features if f != "proj_size"]
    if other:
        raise ValueError(f"PyTorch's nn.{layer._cell.upper()} has no {', '.join(other)}: "
                         f"{layer!r} cannot be represented (fastrnn's npz or .frnn keep it)")


def to_state_dict(layer):
    """The layer as an nn.LSTM / nn.GRU state_dict of numpy arrays (LSTM bias in bias_ih,
    bias_hh zero)."""
    _check_representable(layer)
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
    return out


def to_torch(layer):
    """The layer as a torch state_dict (tensors) for nn.LSTM / nn.GRU."""
    torch = require("torch", "torch")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in to_state_dict(layer).items()}


def to_torch_module(layer):
    """An nn.LSTM / nn.GRU (batch_first=True, the layer's dtype) holding the layer's weights."""
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
    torch = require("torch", "torch")
    torch.save(to_torch(layer), path)


def save_safetensors(layer, path):
    write_safetensors(to_state_dict(layer), path)
