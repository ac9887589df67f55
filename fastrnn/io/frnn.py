"""The `.frnn` flat weight file (byte layout: docs/frnn-format.md).

One layer (LSTM or GRU, stacked and/or bidirectional) in a documented little-endian layout that
the C library reads without Python (`fr_model_load_file` / `fr_model_load_buffer`). This reader
is pure Python and checks the same things in the same order as the C one.

Version 1 holds the plain cell; version 2 adds a variant block after the header (activations
per direction and slot, clip, cell_clip, peepholes, input_forget, projection; see
docs/variants.md) and the peephole and projection arrays. The writer uses version 1 whenever
the layer is a plain cell, so that readers of version 1 keep reading those files. Version 3
holds a quantized layer (`layer.quantize(...)`): version 2's layout with header byte 19 = 1
(int8 weights with their float32 scales in the payload) or 2 (bfloat16 weights, 16 bits each).
"""
import math
import os
import struct
import zlib

import numpy as np

MAGIC = b"FRNN"
VERSION = 1
VARIANT_VERSION = 2  # files whose cell has variants
QUANTIZED_VERSION = 3  # files of int8 / bf16 layers
HEADER_SIZE = 64
VARIANT_SIZE = 144
ENDIAN_MARK = 0x01020304
MAX_DIM = 1 << 20
MAX_LAYERS = 4096
MAX_NAME = 4096

# magic, version, header_size, endian, dtype, cell, reset_after, masked_output,
# num_directions, reverse, use_bias, reserved, input, hidden, layers, name_length, reserved,
# payload_size, dropout, recurrent_dropout
_HEADER = struct.Struct("<4sHHIBBBBBBBBIIIIIQdd")
assert _HEADER.size == HEADER_SIZE
# variant_size, peepholes, input_forget, reserved x2, proj_size, reserved, clip, cell_clip,
# proj_clip, activation kinds [direction][slot] x6, reserved x2, (alpha, beta) [direction][slot]
_VARIANT = struct.Struct("<IBBBBII3d6B2B12d")
assert _VARIANT.size == VARIANT_SIZE

_DTYPES = (np.dtype("<f4"), np.dtype("<f8"))
_BF16 = np.dtype("<u2")  # bfloat16 bits: the upper half of a float32
_CELLS = ("lstm", "gru")
_GATES = {"lstm": ("input", "forget", "cell", "output"),
          "gru": ("update", "reset", "candidate")}
_MASKED = ("zero", "carry")
_DIRECTIONS = ("forward", "backward")
_PEEPHOLE_GATES = ("input", "forget", "output")
# Activation codes of the variant block: the C core's fr_act_kind values (fastrnn.h), 0 = the
# slot's plain function, and 12 = linear (the identity; the C reader runs it as affine(1, 0)).
ACTIVATION_CODES = {
    "sigmoid": 1, "tanh": 2, "relu": 3, "hard_sigmoid": 4, "softsign": 5, "softplus": 6,
    "elu": 7, "leaky_relu": 8, "thresholded_relu": 9, "scaled_tanh": 10, "affine": 11,
    "linear": 12,
}
_ACTIVATION_NAMES = {code: name for name, code in ACTIVATION_CODES.items()}
_PLAIN = ("sigmoid", "tanh", "tanh")  # code 0 in slots f, g, h
_TAKES_ALPHA = {"hard_sigmoid", "elu", "leaky_relu", "thresholded_relu", "scaled_tanh", "affine"}
_TAKES_BETA = {"hard_sigmoid", "scaled_tanh", "affine"}


def _parts(cell, use_bias):
    parts = ["kernel", "recurrent"]
    if use_bias:
        parts += ["bias", "recurrent_bias"] if cell == "gru" else ["bias"]
    return parts


def _arrays(cell, input_size, hidden_size, num_layers, num_directions, use_bias,
            peepholes=False, proj_size=0, quantized=None):
    """(state_dict key, shape, dtype) in file order; dtype None: the file's float dtype."""
    out = []
    H, R = hidden_size, proj_size or hidden_size  # R: units of h
    for k in range(num_layers):
        in_k = input_size if k == 0 else num_directions * R
        for d in range(num_directions):
            prefix = f"layer{k}.{_DIRECTIONS[d]}"
            for gate in _GATES[cell]:
                for part in _parts(cell, use_bias):
                    shape = {"kernel": (in_k, H), "recurrent": (R, H)}.get(part, (H,))
                    if quantized == "int8" and part in ("kernel", "recurrent"):
                        out.append((f"{prefix}.{gate}.{part}", shape, np.dtype(np.int8)))
                        out.append((f"{prefix}.{gate}.{part}_scale", (H,), _DTYPES[0]))
                    elif quantized == "bf16" and part in ("kernel", "recurrent"):
                        out.append((f"{prefix}.{gate}.{part}", shape, _BF16))
                    else:
                        out.append((f"{prefix}.{gate}.{part}", shape, None))
            if peepholes:  # the (3, H) block: input, forget, output
                out += [(f"{prefix}.{gate}.peephole", (H,), None) for gate in _PEEPHOLE_GATES]
            if proj_size:
                out.append((f"{prefix}.projection", (H, proj_size), None))
    return out


def save_frnn(layer, path):
    """Write `layer` (fastrnn.LSTM / fastrnn.GRU) to `path` as a .frnn file.

    The file keeps every setting that shapes the outputs or training (cell, sizes, stack,
    direction, bias, reset_after, masked_output, dtype, dropout, recurrent_dropout, cell
    variants) and the name. The header has no place for `trainable` (a frozen layer), so a
    layer with trainable=False gives a UserWarning (it reloads trainable; .npz keeps it).
    Raises ValueError for a name longer than 4096 UTF-8 bytes.
    """
    from ..layers import GRU, LSTM

    if not isinstance(layer, (LSTM, GRU)):
        raise TypeError(f"save_frnn needs a fastrnn LSTM or GRU layer, got {type(layer).__name__}")
    if not layer.trainable and not layer.quantization:
        import warnings
        warnings.warn(f"{layer!r} has trainable=False, which the .frnn header cannot hold: the "
                      "file reloads as trainable=True (fastrnn's .npz keeps it)", UserWarning,
                      stacklevel=2)
    data = _encode(layer)
    with open(os.fspath(path), "wb") as f:
        f.write(data)


def _variant_block(layer):
    """The version-2 variant block of a layer (docs/frnn-format.md)."""
    slots = 3 if layer._cell == "lstm" else 2
    kinds, params = [0] * 6, [0.0] * 12
    for d, acts in enumerate(layer.activations):
        for s, (name, alpha, beta) in enumerate(acts[:slots]):
            kinds[d * 3 + s] = ACTIVATION_CODES[name]
            if name in _TAKES_ALPHA:
                params[(d * 3 + s) * 2] = float(alpha)
            if name in _TAKES_BETA:
                params[(d * 3 + s) * 2 + 1] = float(beta)
    return _VARIANT.pack(
        VARIANT_SIZE, int(getattr(layer, "peepholes", False)),
        int(getattr(layer, "input_forget", False)), 0, 0, getattr(layer, "proj_size", 0) or 0, 0,
        layer.clip or 0.0, getattr(layer, "cell_clip", None) or 0.0,
        getattr(layer, "proj_clip", None) or 0.0, *kinds, 0, 0, *params)


def _encode(layer):
    cell = layer._cell
    dtype = _DTYPES[0] if layer.dtype == np.float32 else _DTYPES[1]
    name = (layer.name or "").encode("utf-8")
    if len(name) > MAX_NAME:
        raise ValueError(f"layer name too long for .frnn ({len(name)} bytes, at most {MAX_NAME})")
    quantized = layer.quantization
    variant = bool(layer.variant_features) or bool(quantized)
    version = QUANTIZED_VERSION if quantized else VARIANT_VERSION if variant else VERSION
    sd = layer.state_dict()
    order = _arrays(cell, layer.input_size, layer.hidden_size, layer.num_layers,
                    layer.num_directions, layer.use_bias, getattr(layer, "peepholes", False),
                    getattr(layer, "proj_size", 0) or 0, quantized)

    def stored(key, kind):
        if kind == _BF16:  # the bf16 values' upper 16 bits (their lower 16 are zero)
            bits = np.ascontiguousarray(sd[key], np.float32).view(np.uint32) >> 16
            return bits.astype(_BF16)
        return np.ascontiguousarray(sd[key], dtype=kind or dtype)
    payload = b"".join(stored(key, kind).tobytes() for key, _, kind in order)
    header = _HEADER.pack(
        MAGIC, version, HEADER_SIZE, ENDIAN_MARK,
        _DTYPES.index(dtype), _CELLS.index(cell),
        int(cell == "gru" and layer.reset_after), _MASKED.index(layer.masked_output),
        layer.num_directions, int(layer.reverse), int(layer.use_bias),
        {None: 0, "int8": 1, "bf16": 2}[quantized], layer.input_size,
        layer.hidden_size, layer.num_layers, len(name), 0, len(payload), layer.dropout,
        layer.recurrent_dropout)
    body = header + (_variant_block(layer) if variant else b"") + name + payload
    return body + struct.pack("<I", zlib.crc32(body))


def _read_source(path_or_bytes):
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    if isinstance(path_or_bytes, (str, os.PathLike)):
        with open(os.fspath(path_or_bytes), "rb") as f:
            return f.read()
    if hasattr(path_or_bytes, "read"):
        data = path_or_bytes.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("load_frnn needs a binary file object")
        return bytes(data)
    raise TypeError(f"load_frnn needs a path, bytes or a binary file, got "
                    f"{type(path_or_bytes).__name__}")


def _error(msg):
    return ValueError(f"invalid .frnn data: {msg}")


def _finite(v):
    return math.isfinite(v)


def _parse_variant(data, cell, ndir, recurrent_dropout):
    """Validate the version-2 variant block (as the C reader does, in the same order) and
    return the layer's variant keywords."""
    (size, peepholes, input_forget, res0, res1, proj_size, res2, clip, cell_clip, proj_clip,
     *rest) = _VARIANT.unpack_from(data, HEADER_SIZE)
    kinds, res3, params = rest[:6], rest[6:8], rest[8:]
    if size != VARIANT_SIZE:
        raise _error(f"bad variant block size {size} (expected {VARIANT_SIZE})")
    checks = [
        ("reserved bytes", res0 == 0 and res1 == 0 and res2 == 0 and res3 == [0, 0]),
        ("peepholes", peepholes <= 1),
        ("input_forget", input_forget <= 1),
        ("proj_size", proj_size <= MAX_DIM),
        ("clip (finite, >= 0)", _finite(clip) and clip >= 0),
        ("cell_clip (finite, >= 0)", _finite(cell_clip) and cell_clip >= 0),
        ("proj_clip (finite, >= 0)", _finite(proj_clip) and proj_clip >= 0),
        ("proj_clip without a projection (proj_size 0)", not (proj_clip > 0 and proj_size == 0)),
        ("recurrent_dropout with a projection", not (proj_size > 0 and recurrent_dropout != 0)),
    ]
    for what, ok in checks:
        if not ok:
            raise _error(f"bad variant field: {what}")
    gru = cell == "gru"
    if gru:
        for what, used in (("peepholes", peepholes), ("input_forget", input_forget),
                           ("cell_clip", cell_clip != 0), ("proj_size", proj_size != 0)):
            if used:
                raise _error(f"bad variant field: {what} is an LSTM feature (the file holds a "
                             "GRU)")
    slots = 2 if gru else 3
    acts = []
    for d in range(2):
        for s in range(3):
            kind, alpha, beta = kinds[d * 3 + s], params[(d * 3 + s) * 2], \
                params[(d * 3 + s) * 2 + 1]
            where = f"direction {d}, slot {'fgh'[s]}"
            if d >= ndir or s >= slots:
                if kind != 0 or alpha != 0 or beta != 0:
                    raise _error(f"bad variant field: activation of {where} is unused and must "
                                 "be zero")
                continue
            if kind > ACTIVATION_CODES["linear"]:
                raise _error(f"bad variant field: activation kind {kind} ({where}; at most "
                             f"{ACTIVATION_CODES['linear']})")
            if not (_finite(alpha) and _finite(beta)):
                raise _error(f"bad variant field: activation alpha / beta not finite ({where})")
            name = _ACTIVATION_NAMES.get(kind) or _PLAIN[s]
            explicit = kind != 0
            takes_a = explicit and name in _TAKES_ALPHA
            takes_b = explicit and name in _TAKES_BETA
            if (not takes_a and alpha != 0) or (not takes_b and beta != 0):
                raise _error(f"bad variant field: activation kind {kind} takes no "
                             f"{'alpha' if not takes_a and alpha != 0 else 'beta'}, which must "
                             f"be 0 ({where})")
            acts.append((name, alpha if takes_a else None, beta if takes_b else None))
    out = {"activations": acts, "clip": clip or None}
    if not gru:
        out.update(peepholes=bool(peepholes), input_forget=bool(input_forget),
                   cell_clip=cell_clip or None, proj_size=proj_size,
                   proj_clip=proj_clip or None)
    return out


def load_frnn(path_or_bytes):
    """Read a .frnn file (path, bytes-like or binary file object) into a fastrnn layer."""
    from ..layers import GRU, LSTM

    data = _read_source(path_or_bytes)
    n = len(data)
    if n < 4 or data[:4] != MAGIC:
        raise _error('not a .frnn file (magic bytes "FRNN" missing)')
    if n < HEADER_SIZE + 4:
        raise _error(f"truncated: {n} bytes, the header alone needs {HEADER_SIZE + 4}")
    (_, version, header_size, endian, dtype_code, cell_code, reset_after, masked, ndir, reverse,
     use_bias, reserved0, input_size, hidden_size, num_layers, name_length, reserved1,
     payload_size, dropout, recurrent_dropout) = _HEADER.unpack_from(data)
    if version not in (VERSION, VARIANT_VERSION, QUANTIZED_VERSION):
        raise ValueError(f".frnn version {version} is not supported (this reader reads versions "
                         f"{VERSION} to {QUANTIZED_VERSION})")
    quantized = {1: "int8", 2: "bf16"}.get(reserved0) if version == QUANTIZED_VERSION else None
    if header_size != HEADER_SIZE:
        raise _error(f"bad header size {header_size} (expected {HEADER_SIZE})")
    if endian != ENDIAN_MARK:
        raise _error(f"bad endianness marker 0x{endian:08x} (expected 0x{ENDIAN_MARK:08x}, "
                     "little-endian)")
    name_offset = HEADER_SIZE + (VARIANT_SIZE if version != VERSION else 0)
    if n < name_offset + 4:
        raise _error(f"truncated: {n} bytes, the header and the variant block alone need "
                     f"{name_offset + 4}")
    checks = [
        ("dtype", dtype_code <= 1),
        ("cell type", cell_code <= 1),
        ("reset_after", reset_after <= 1 and not (cell_code == 0 and reset_after)),
        ("masked_output", masked <= 1),
        ("num_directions", ndir in (1, 2)),
        ("reverse", reverse <= 1 and not (reverse and ndir != 1)),
        ("use_bias", use_bias <= 1),
        ("weights (version 3: 1 = int8, 2 = bf16)" if version == QUANTIZED_VERSION
         else "reserved bytes", (quantized is not None if version == QUANTIZED_VERSION
                                 else reserved0 == 0) and reserved1 == 0),
        ("dtype (quantized weights: float32)", not (quantized and dtype_code != 0)),
        ("input_size", 1 <= input_size <= MAX_DIM),
        ("hidden_size", 1 <= hidden_size <= MAX_DIM),
        ("num_layers", 1 <= num_layers <= MAX_LAYERS),
        ("name length", name_length <= MAX_NAME),
        ("dropout", 0.0 <= dropout < 1.0),
        ("recurrent_dropout", 0.0 <= recurrent_dropout < 1.0),
    ]
    for what, ok in checks:
        if not ok:
            raise _error(f"bad header field: {what}")
    cell = _CELLS[cell_code]
    dtype = _DTYPES[dtype_code]
    variant = {}
    if version != VERSION:
        variant = _parse_variant(data, cell, ndir, recurrent_dropout)
    if quantized and variant.get("proj_size", 0):
        raise _error("bad variant field: proj_size with quantized weights")
    order = _arrays(cell, input_size, hidden_size, num_layers, ndir, bool(use_bias),
                    variant.get("peepholes", False), variant.get("proj_size", 0), quantized)
    expect = sum(int(np.prod(shape)) * (kind or dtype).itemsize for _, shape, kind in order)
    if payload_size != expect:
        raise _error(f"payload size {payload_size} does not match the {expect} bytes its sizes "
                     "describe")
    total = name_offset + name_length + payload_size + 4
    if total != n:
        raise _error(f"truncated or oversized: {n} bytes, the header describes {total}")
    stored = struct.unpack_from("<I", data, n - 4)[0]
    computed = zlib.crc32(memoryview(data)[:n - 4])
    if stored != computed:
        raise _error(f"corrupt: CRC32 0x{computed:08x} does not match the stored 0x{stored:08x}")
    # The name is a label only; like the C reader, do not reject a file for its bytes.
    name = data[name_offset:name_offset + name_length].decode("utf-8", "replace") or None

    kwargs = dict(num_layers=num_layers, bidirectional=ndir == 2, use_bias=bool(use_bias),
                  reverse=bool(reverse), dropout=dropout, recurrent_dropout=recurrent_dropout,
                  masked_output=_MASKED[masked], dtype=dtype.newbyteorder("=").name, name=name,
                  **variant)
    state, offset = {}, name_offset + name_length
    for key, shape, kind in order:
        count = int(np.prod(shape))
        kind = kind or dtype
        state[key] = np.frombuffer(data, kind, count, offset).reshape(shape).astype(
            kind.newbyteorder("="))
        offset += count * kind.itemsize
    if quantized == "bf16":
        for key, shape, kind in order:
            if kind == _BF16:
                value = (state[key].astype(np.uint32) << 16).view(np.float32)
                if not np.all(np.isfinite(value)):
                    raise _error(f"{key} holds a weight that is not finite")
                state[key] = value
        kwargs["dtype"] = "float32"
        cls = GRU if cell == "gru" else LSTM
        if cell == "gru":
            kwargs["reset_after"] = bool(reset_after)
        layer = cls(input_size, hidden_size, init="torch", **kwargs)
        layer.load_state_dict(state)
        return layer.quantize("bf16")  # rounding bf16 values is exact: the file's weights
    if quantized:
        from ._common import build_int8
        kwargs.pop("dtype")
        if cell == "gru":
            kwargs["reset_after"] = bool(reset_after)
        for key, value in state.items():
            if key.endswith("_scale") and not (np.all(np.isfinite(value)) and np.all(value >= 0)):
                raise _error(f"{key} holds a scale that is negative or not finite")
        return build_int8(".frnn", cell, input_size, hidden_size, state, **kwargs)
    if cell == "gru":
        layer = GRU(input_size, hidden_size, reset_after=bool(reset_after), **kwargs)
    else:
        layer = LSTM(input_size, hidden_size, **kwargs)
    layer.load_state_dict(state)
    return layer


def all_weights(path_or_bytes):
    """The weights of a .frnn file as the layer's state_dict(): a dict
    "layer0.forward.input.kernel" -> np.ndarray (a .frnn file holds one layer and nothing
    else). Raises ValueError for invalid data, as load_frnn.

    Example:
        >>> from fastrnn.io.frnn import all_weights
        >>> sorted(all_weights("gru.frnn"))[:2]  # doctest: +SKIP
        ['layer0.forward.candidate.bias', 'layer0.forward.candidate.kernel']
    """
    return load_frnn(path_or_bytes).state_dict()
