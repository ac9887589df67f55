"""A minimal writer of TensorFlow checkpoints (`.index` SSTable + one data shard), for tests that
need checkpoints TensorFlow cannot make here (broken ones, or layouts built from torch weights).
It follows the format fastrnn.io.tf1 reads; TF-written files are covered by tests/fixtures."""
import struct

import numpy as np

_TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)
_TF_DTYPE = {np.dtype(np.float32): 1, np.dtype(np.float64): 2}


def varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _block(items):
    body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in items)
    return body + struct.pack("<II", 0, 1)  # one restart point at offset 0


def write_index(path, entries):
    """A single-data-block SSTable of {key bytes: value bytes}."""
    data = _block(sorted(entries.items()))
    index = _block([(max(entries), varint(0) + varint(len(data)))])
    footer = (varint(0) + varint(0) + varint(len(data) + 5) + varint(len(index))).ljust(40, b"\0")
    with open(path, "wb") as f:
        f.write(data + b"\0" * 5 + index + b"\0" * 5 + footer + _TABLE_MAGIC)


def _field(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def write_checkpoint(prefix, variables):
    """Write {name: float array} as `prefix.index` + `prefix.data-00000-of-00001`."""
    entries = {b"": varint(1 << 3) + varint(1)}  # BundleHeaderProto num_shards = 1
    blob = bytearray()
    for name, a in variables.items():
        a = np.ascontiguousarray(a)
        shape = b"".join(_field(2, varint(1 << 3) + varint(d)) for d in a.shape)
        entries[name.encode()] = (varint(1 << 3) + varint(_TF_DTYPE[a.dtype]) + _field(2, shape)
                                  + varint(4 << 3) + varint(len(blob))
                                  + varint(5 << 3) + varint(a.nbytes))
        blob += a.tobytes()
    write_index(prefix + ".index", entries)
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(bytes(blob))
