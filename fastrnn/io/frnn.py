"""The `.frnn` flat weight file (byte layout: docs/frnn-format.md).

One layer (LSTM or GRU, stacked and/or bidirectional) in a documented little-endian layout that
the C library reads without Python (`fr_model_load_file` / `fr_model_load_buffer`). This reader
is pure Python and checks the same things in the same order as the C one.
"""
import os
import struct
import zlib

import numpy as np

MAGIC = b"FRNN"
VERSION = 1
HEADER_SIZE = 64
ENDIAN_MARK = 0x01020304
MAX_DIM = 1 << 20
MAX_LAYERS = 4096
MAX_NAME = 4096

# magic, version, header_size, endian, dtype, cell, reset_after, masked_output,
# num_directions, reverse, use_bias, reserved, input, hidden, layers, name_length, reserved,
# payload_size, dropout, recurrent_dropout
_HEADER = struct.Struct("<4sHHIBBBBBBBBIIIIIQdd")
assert _HEADER.size == HEADER_SIZE

_DTYPES = (np.dtype("<f4"), np.dtype("<f8"))
_CELLS = ("lstm", "gru")
_GATES = {"lstm": ("input", "forget", "cell", "output"),
          "gru": ("update", "reset", "candidate")}
_MASKED = ("zero", "carry")
_DIRECTIONS = ("forward", "backward")


def _parts(cell, use_bias):
    parts = ["kernel", "recurrent"]
    if use_bias:
        parts += ["bias", "recurrent_bias"] if cell == "gru" else ["bias"]
    return parts


def _arrays(cell, input_size, hidden_size, num_layers, num_directions, use_bias):
    """(state_dict key, shape) in file order."""
    out = []
    for k in range(num_layers):
        in_k = input_size if k == 0 else num_directions * hidden_size
        for d in range(num_directions):
            for gate in _GATES[cell]:
                for part in _parts(cell, use_bias):
                    shape = {"kernel": (in_k, hidden_size),
                             "recurrent": (hidden_size, hidden_size)}.get(part, (hidden_size,))
                    out.append((f"layer{k}.{_DIRECTIONS[d]}.{gate}.{part}", shape))
    return out


def save_frnn(layer, path):
    """Write `layer` (fastrnn.LSTM / fastrnn.GRU) to `path` as a .frnn file."""
    from ..layers import GRU, LSTM

    if not isinstance(layer, (LSTM, GRU)):
        raise TypeError(f"save_frnn needs a fastrnn LSTM or GRU layer, got {type(layer).__name__}")
    data = _encode(layer)
    with open(os.fspath(path), "wb") as f:
        f.write(data)


def _encode(layer):
    cell = layer._cell
    dtype = _DTYPES[0] if layer.dtype == np.float32 else _DTYPES[1]
    name = (layer.name or "").encode("utf-8")
    if len(name) > MAX_NAME:
        raise ValueError(f"layer name too long for .frnn ({len(name)} bytes, at most {MAX_NAME})")
    sd = layer.state_dict()
    order = _arrays(cell, layer.input_size, layer.hidden_size, layer.num_layers,
                    layer.num_directions, layer.use_bias)
    payload = b"".join(np.ascontiguousarray(sd[key], dtype=dtype).tobytes() for key, _ in order)
    header = _HEADER.pack(
        MAGIC, VERSION, HEADER_SIZE, ENDIAN_MARK, _DTYPES.index(dtype), _CELLS.index(cell),
        int(cell == "gru" and layer.reset_after), _MASKED.index(layer.masked_output),
        layer.num_directions, int(layer.reverse), int(layer.use_bias), 0, layer.input_size,
        layer.hidden_size, layer.num_layers, len(name), 0, len(payload), layer.dropout,
        layer.recurrent_dropout)
    body = header + name + payload
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
    if version != VERSION:
        raise ValueError(f".frnn version {version} is not supported (this reader reads version "
                         f"{VERSION})")
    if header_size != HEADER_SIZE:
        raise _error(f"bad header size {header_size} (expected {HEADER_SIZE})")
    if endian != ENDIAN_MARK:
        raise _error(f"bad endianness marker 0x{endian:08x} (expected 0x{ENDIAN_MARK:08x}, "
                     "little-endian)")
    checks = [
        ("dtype", dtype_code <= 1),
        ("cell type", cell_code <= 1),
        ("reset_after", reset_after <= 1 and not (cell_code == 0 and reset_after)),
        ("masked_output", masked <= 1),
        ("num_directions", ndir in (1, 2)),
        ("reverse", reverse <= 1 and not (reverse and ndir != 1)),
        ("use_bias", use_bias <= 1),
        ("reserved bytes", reserved0 == 0 and reserved1 == 0),
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
    order = _arrays(cell, input_size, hidden_size, num_layers, ndir, bool(use_bias))
    expect = sum(int(np.prod(shape)) for _, shape in order) * dtype.itemsize
    if payload_size != expect:
        raise _error(f"payload size {payload_size} does not match the {expect} bytes its sizes "
                     "describe")
    total = HEADER_SIZE + name_length + payload_size + 4
    if total != n:
        raise _error(f"truncated or oversized: {n} bytes, the header describes {total}")
    stored = struct.unpack_from("<I", data, n - 4)[0]
    computed = zlib.crc32(memoryview(data)[:n - 4])
    if stored != computed:
        raise _error(f"corrupt: CRC32 0x{computed:08x} does not match the stored 0x{stored:08x}")
    # The name is a label only; like the C reader, do not reject a file for its bytes.
    name = data[HEADER_SIZE:HEADER_SIZE + name_length].decode("utf-8", "replace") or None

    kwargs = dict(num_layers=num_layers, bidirectional=ndir == 2, use_bias=bool(use_bias),
                  reverse=bool(reverse), dropout=dropout, recurrent_dropout=recurrent_dropout,
                  masked_output=_MASKED[masked], dtype=dtype.newbyteorder("=").name, name=name)
    if cell == "gru":
        layer = GRU(input_size, hidden_size, reset_after=bool(reset_after), **kwargs)
    else:
        layer = LSTM(input_size, hidden_size, **kwargs)
    state, offset = {}, HEADER_SIZE + name_length
    for key, shape in order:
        count = int(np.prod(shape))
        state[key] = np.frombuffer(data, dtype, count, offset).reshape(shape)
        offset += count * dtype.itemsize
    layer.load_state_dict(state)
    return layer
