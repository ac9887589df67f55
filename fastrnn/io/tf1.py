"""TensorFlow 1 RNN-cell checkpoints, read without TensorFlow.

A TF checkpoint `prefix` is `prefix.index` (a LevelDB-style SSTable mapping variable names to
BundleEntryProto records) and `prefix.data-0000k-of-0000n` (the raw little-endian tensor bytes).

Cells (by the variable scope names TF1 gives them):
* `basic_lstm_cell`, `lstm_cell`: kernel (I+H, 4H) over concat([x, h]), columns i, j(=cell), f,
  o; bias (4H,); `forget_bias` is a constructor constant NOT stored in the file, 1.0 by default.
  `LSTMCell(use_peepholes=True)` adds `w_i_diag`, `w_f_diag`, `w_o_diag` (H,) (the layer gets
  `peepholes=True`); `num_proj=P` adds `projection/kernel` (H, P) (the layer's `proj_size=P`,
  key `projection`; the kernel is then (I+P, 4H): the recurrent input is the projected m).
  `cell_clip` and `proj_clip` are constructor constants NOT stored in the file: pass them to
  `from_tf_checkpoint` (`cell_clip` applies to the LSTM layers; `proj_clip` needs a projection).
* `cudnn_compatible_lstm_cell`: the same layout, forget_bias 0.0 by default.
* `gru_cell`: gates/kernel (I+H, 2H) columns [reset | update], gates/bias, candidate/kernel
  (I+H, H), candidate/bias; reset applied before the matmul (fastrnn reset_after=False).
* `cudnn_compatible_gru_cell`: gates/* as GRUCell, candidate/input_projection/{kernel,bias} and
  candidate/hidden_projection/{kernel,bias} with the hidden bias inside the reset product
  (reset_after=True).
Scopes: `.../multi_rnn_cell/cell_k/<cell>` stacks into one layer; `.../bidirectional_rnn/{fw,bw}/
<cell>` is one bidirectional layer; `{fw,bw}/multi_rnn_cell/...` (each direction stacked on its
own) gives two layers, the bw one with reverse=True; `stack_bidirectional_rnn/cell_k/
bidirectional_rnn/{fw,bw}` is one stacked bidirectional layer.
Outputs match `dynamic_rnn(sequence_length=...)` (zeros past the length: masked_output="zero").
"""
import os
import re
import struct

import numpy as np

from ._common import build, split_columns

_TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)
_TF_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 9: "<i8", 19: "<f2", 10: "?"}
_CELLS = ("cudnn_compatible_lstm_cell", "cudnn_compatible_gru_cell", "basic_lstm_cell",
          "lstm_cell", "gru_cell")
# column blocks of the kernels (GRU: gates/kernel [reset | update], then candidate/kernel)
GATE_ORDER = {"lstm": ("input", "cell", "forget", "output"),
              "gru": ("reset", "update", "candidate")}
_DEFAULT_FORGET_BIAS = {"basic_lstm_cell": 1.0, "lstm_cell": 1.0,
                        "cudnn_compatible_lstm_cell": 0.0}


def is_tf_index(data):
    return len(data) >= 48 and data[-8:] == _TABLE_MAGIC


# ---------------------------------------------------------------------------------------------
# SSTable + protobuf decoding

def _varint(buf, pos, label):
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError(f"{label}: truncated or corrupt varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _block(data, offset, size, label):
    """Entries (key, value) of one table block."""
    if offset < 0 or size < 4 or offset + size + 5 > len(data):
        raise ValueError(f"{label}: block at {offset} (+{size}) lies outside the "
                         f"{len(data)}-byte index (truncated or corrupt)")
    if data[offset + size] != 0:
        raise ValueError(f"{label}: compressed checkpoint index blocks are not supported")
    block = data[offset:offset + size]
    (n_restarts,) = struct.unpack_from("<I", block, size - 4)
    end = size - 4 - 4 * n_restarts
    if end < 0:
        raise ValueError(f"{label}: corrupt block restart array")
    pos, key, out = 0, b"", []
    while pos < end:
        shared, pos = _varint(block, pos, label)
        non_shared, pos = _varint(block, pos, label)
        vlen, pos = _varint(block, pos, label)
        if shared > len(key) or pos + non_shared + vlen > end:
            raise ValueError(f"{label}: corrupt block entry")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        out.append((key, block[pos:pos + vlen]))
        pos += vlen
    return out


def read_index(data, label="<index>"):
    """{name: value bytes} of an SSTable (all data blocks, via the index block)."""
    if not is_tf_index(data):
        raise ValueError(f"{label}: not a TensorFlow checkpoint index (bad table magic)")
    footer = data[-48:]
    _, pos = _varint(footer, 0, label)          # metaindex handle (unused)
    _, pos = _varint(footer, pos, label)
    index_off, pos = _varint(footer, pos, label)
    index_size, pos = _varint(footer, pos, label)
    entries = {}
    for _, handle in _block(data, index_off, index_size, label):
        off, p = _varint(handle, 0, label)
        size, _ = _varint(handle, p, label)
        for key, value in _block(data, off, size, label):
            entries[key.decode("utf-8", "replace")] = value
    return entries


def _fields(buf, label):
    """Protobuf wire fields of a message: [(number, value)]; varints as int, others bytes."""
    pos, out = 0, []
    while pos < len(buf):
        tag, pos = _varint(buf, pos, label)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, label)
        elif wire == 2:
            n, pos = _varint(buf, pos, label)
            if pos + n > len(buf):
                raise ValueError(f"{label}: truncated protobuf field")
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        else:
            raise ValueError(f"{label}: corrupt protobuf (wire type {wire})")
        out.append((number, value))
    return out


def _entry(value, name, label):
    """BundleEntryProto -> (numpy dtype, shape, shard, offset, size)."""
    dtype, shape, shard, offset, size = None, (), 0, 0, 0
    for number, v in _fields(value, label):
        if number == 1:
            dtype = v
        elif number == 2:
            dims = []
            for n, dim in _fields(v, label):
                if n == 2:
                    dims.append(next((s for k, s in _fields(dim, label) if k == 1), 0))
                elif n == 3 and v:
                    raise ValueError(f"{label}: variable {name!r} has unknown rank")
            shape = tuple(d - (1 << 64) if d >= 1 << 63 else d for d in dims)
        elif number == 3:
            shard = v
        elif number == 4:
            offset = v
        elif number == 5:
            size = v
        elif number == 7:
            raise ValueError(f"{label}: variable {name!r} is partitioned (slices); not supported")
    if dtype not in _TF_DTYPES:
        raise ValueError(f"{label}: variable {name!r} has unsupported TF dtype enum {dtype}")
    if any(d < 0 for d in shape):
        raise ValueError(f"{label}: variable {name!r} has a negative dimension {shape}")
    return np.dtype(_TF_DTYPES[dtype]), shape, shard, offset, size


def _prefix(path):
    path = os.fspath(path)
    for suffix in (".index",):
        if path.endswith(suffix):
            return path[:-len(suffix)]
    if re.search(r"\.data-\d{5}-of-\d{5}$", path):
        return path[:path.rindex(".data-")]
    return path


def read_checkpoint(path):
    """{variable name: numpy array} of a TF checkpoint (prefix, `.index` or data-file path)."""
    prefix = _prefix(path)
    label = prefix
    if not os.path.isfile(prefix + ".index"):  # e.g. an index file under another name
        raise ValueError(f"{label}: no checkpoint index {prefix}.index (give the checkpoint's "
                         "prefix, its .index file or a data file)")
    with open(prefix + ".index", "rb") as f:
        entries = read_index(f.read(), prefix + ".index")
    header = entries.pop("", None)
    num_shards = 1
    if header is not None:
        for number, v in _fields(header, label):
            if number == 1:
                num_shards = v
            elif number == 2 and v != 0:
                raise ValueError(f"{label}: big-endian checkpoints are not supported")
    if not 1 <= num_shards <= 4096:
        raise ValueError(f"{label}: implausible shard count {num_shards}")
    shards = {}
    out = {}
    for name, value in entries.items():
        dt, shape, shard, offset, size = _entry(value, name, label)
        if not 0 <= shard < num_shards:
            raise ValueError(f"{label}: variable {name!r} names shard {shard} of {num_shards}")
        if shard not in shards:
            fn = f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"
            if not os.path.exists(fn):
                raise ValueError(f"{label}: data file {fn} is missing")
            with open(fn, "rb") as f:
                shards[shard] = f.read()
        data = shards[shard]
        need = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if size != need:
            raise ValueError(f"{label}: variable {name!r} records {size} bytes, but shape {shape} "
                             f"of {dt} needs {need}")
        if offset + size > len(data):
            raise ValueError(f"{label}: variable {name!r} lies at [{offset}, {offset + size}) "
                             f"beyond the {len(data)}-byte data file (truncated?)")
        out[name] = np.frombuffer(data, dt, count=need // dt.itemsize if dt.itemsize else 0,
                                  offset=offset).reshape(shape).copy()
    return out


def all_weights(path):
    """Every variable of a TF checkpoint by its name ("rnn/lstm_cell/kernel", "dense/bias"),
    as numpy arrays: for the weights around the recurrent cells."""
    return read_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# Cells -> layers

_CELL_RE = re.compile(r"^(.*?)/?\b(" + "|".join(_CELLS) + r")/(.+)$")


def _locate(parent):
    """(layer name, layer index, direction, separate-stack) of a cell's parent scope."""
    p = "/" + parent
    m = re.match(r"^(.*)/stack_bidirectional_rnn/cell_(\d+)/bidirectional_rnn/(fw|bw)$", p)
    if m:
        return (m.group(1) + "/stack_bidirectional_rnn")[1:], int(m.group(2)), m.group(3), False
    m = re.match(r"^(.*)/(fw|bw)/multi_rnn_cell/cell_(\d+)$", p)
    if m:
        return (m.group(1) + "/" + m.group(2))[1:], int(m.group(3)), m.group(2), True
    m = re.match(r"^(.*)/(fw|bw)$", p)
    if m:
        return m.group(1)[1:], 0, m.group(2), False
    m = re.match(r"^(.*)/multi_rnn_cell/cell_(\d+)$", p)
    if m:
        return (m.group(1) + "/multi_rnn_cell")[1:], int(m.group(2)), "fw", False
    return parent, 0, "fw", False


def _get(variables, name, label):
    if name not in variables:
        raise ValueError(f"{label}: the checkpoint lacks variable {name!r}")
    return variables[name]


def _cell_weights(variables, root, cell, forget_bias, label, sd, prefix):
    """Canonical weights of one cell under `root` ("rnn/basic_lstm_cell"); returns
    (kind, input_size, hidden_size, use_bias, reset_after)."""
    if cell in ("basic_lstm_cell", "lstm_cell", "cudnn_compatible_lstm_cell"):
        kernel = _get(variables, root + "/kernel", label)
        if kernel.ndim != 2 or kernel.shape[1] % 4:
            raise ValueError(f"{label}: {root}/kernel has shape {kernel.shape}, expected "
                             "(input_size + H, 4H)")
        H = kernel.shape[1] // 4
        proj = variables.get(root + "/projection/kernel")
        P = 0
        if proj is not None:  # LSTMCell(num_proj=P): m = (o * tanh(c)) @ projection
            if proj.ndim != 2 or proj.shape[0] != H or proj.shape[1] < 1:
                raise ValueError(f"{label}: {root}/projection/kernel has shape {proj.shape}, "
                                 f"expected ({H}, num_proj)")
            P = proj.shape[1]
            sd[f"{prefix}.projection"] = proj
        rec = P or H  # rows of the recurrent part: the previous (projected) output
        if kernel.shape[0] <= rec:
            raise ValueError(f"{label}: {root}/kernel has shape {kernel.shape}, expected "
                             f"(input_size + {rec}, {4 * H})")
        input_size = kernel.shape[0] - rec
        diags = [d for d in ("w_i_diag", "w_f_diag", "w_o_diag")
                 if f"{root}/{d}" in variables]
        if diags and len(diags) != 3:
            raise ValueError(f"{label}: {root} has peephole variables {diags} but not all of "
                             "w_i_diag, w_f_diag, w_o_diag")
        for d, gate in (("w_i_diag", "input"), ("w_f_diag", "forget"), ("w_o_diag", "output")):
            if diags:
                w = variables[f"{root}/{d}"]
                if w.shape != (H,):
                    raise ValueError(f"{label}: {root}/{d} has shape {w.shape}, expected ({H},)")
                sd[f"{prefix}.{gate}.peephole"] = w
        bias = variables.get(root + "/bias")
        fb = _DEFAULT_FORGET_BIAS[cell] if forget_bias is None else float(forget_bias)
        b = None
        if bias is not None or fb:
            b = np.zeros(4 * H) if bias is None else np.asarray(bias, np.float64).copy()
            if b.shape != (4 * H,):
                raise ValueError(f"{label}: {root}/bias has shape {bias.shape}, "
                                 f"expected ({4 * H},)")
            b[2 * H:3 * H] += fb  # TF adds forget_bias to the f block at run time
            b = b.astype(kernel.dtype)
        split_columns("lstm", GATE_ORDER["lstm"], kernel[:input_size],
                      kernel[input_size:], b, None, H, prefix, sd, proj_size=P)
        return "lstm", input_size, H, b is not None, True, P, bool(diags)
    gk = _get(variables, root + "/gates/kernel", label)
    gb = _get(variables, root + "/gates/bias", label)
    if gk.ndim != 2 or gk.shape[1] % 2 or gk.shape[0] <= gk.shape[1] // 2:
        raise ValueError(f"{label}: {root}/gates/kernel has shape {gk.shape}, expected "
                         "(input_size + H, 2H)")
    H = gk.shape[1] // 2
    I = gk.shape[0] - H
    if gb.shape != (2 * H,):
        raise ValueError(f"{label}: {root}/gates/bias has shape {gb.shape}, expected ({2 * H},)")
    if cell == "gru_cell":
        ck = _get(variables, root + "/candidate/kernel", label)
        cb = _get(variables, root + "/candidate/bias", label)
        if ck.shape != (I + H, H) or cb.shape != (H,):
            raise ValueError(f"{label}: {root}/candidate has shapes {ck.shape}, {cb.shape}; "
                             f"expected ({I + H}, {H}), ({H},)")
        cand_k, cand_r, cand_b, cand_rb = ck[:I], ck[I:], cb, np.zeros(H, gk.dtype)
        reset_after = False
    else:
        ipk = _get(variables, root + "/candidate/input_projection/kernel", label)
        ipb = _get(variables, root + "/candidate/input_projection/bias", label)
        hpk = _get(variables, root + "/candidate/hidden_projection/kernel", label)
        hpb = _get(variables, root + "/candidate/hidden_projection/bias", label)
        for what, a, shape in (("input_projection/kernel", ipk, (I, H)),
                               ("hidden_projection/kernel", hpk, (H, H)),
                               ("input_projection/bias", ipb, (H,)),
                               ("hidden_projection/bias", hpb, (H,))):
            if a.shape != shape:
                raise ValueError(f"{label}: {root}/candidate/{what} has shape {a.shape}, "
                                 f"expected {shape}")
        cand_k, cand_r, cand_b, cand_rb = ipk, hpk, ipb, hpb
        reset_after = True
    for gate, cols in (("reset", slice(0, H)), ("update", slice(H, 2 * H))):
        sd[f"{prefix}.{gate}.kernel"] = gk[:I, cols]
        sd[f"{prefix}.{gate}.recurrent"] = gk[I:, cols]
        sd[f"{prefix}.{gate}.bias"] = gb[cols]
        sd[f"{prefix}.{gate}.recurrent_bias"] = np.zeros(H, gk.dtype)
    sd[f"{prefix}.candidate.kernel"] = cand_k
    sd[f"{prefix}.candidate.recurrent"] = cand_r
    sd[f"{prefix}.candidate.bias"] = cand_b
    sd[f"{prefix}.candidate.recurrent_bias"] = cand_rb
    return "gru", I, H, True, reset_after, 0, False


def from_tf_checkpoint(path, scope=None, forget_bias=None, *, dtype=None, cell_clip=None,
                       proj_clip=None):
    """Layers of the TF1 RNN cells in a checkpoint: one layer, or a dict scope -> layer.

    `scope` picks one layer by its name (as listed when several are found) or, as a prefix,
    restricts the search. `forget_bias=None` uses each cell type's own default. `cell_clip` and
    `proj_clip` are the `LSTMCell` constructor values (not stored in checkpoints): `cell_clip`
    goes to every LSTM layer found (an error when there is none), `proj_clip` to every LSTM
    layer with a projection (`num_proj`; an error when there is none)."""
    from ._common import single_or_dict
    variables = read_checkpoint(path)
    label = _prefix(path)
    groups = {}  # name -> {(layer, dir): (root, cell)}
    for name in variables:
        m = _CELL_RE.match(name)
        if not m:
            continue
        parent, cell = m.group(1), m.group(2)
        if scope is not None and not (parent + "/").startswith(scope.rstrip("/") + "/") \
                and _locate(parent)[0] != scope:
            continue
        layer_name, k, direction, separate = _locate(parent)
        root = f"{parent}/{cell}" if parent else cell
        groups.setdefault(layer_name, {})[(k, direction)] = (root, cell, separate)
    if scope is not None and scope in groups:
        groups = {scope: groups[scope]}
    layers = {}
    for layer_name, cells in groups.items():
        layers[layer_name] = _assemble(variables, layer_name, cells, forget_bias, label, dtype,
                                       cell_clip, proj_clip)
    lstms = [n for n, layer in layers.items() if layer._cell == "lstm"]
    if cell_clip is not None and not lstms:
        raise ValueError(f"{label}: cell_clip is an LSTMCell option, but no LSTM cell was found "
                         f"(layers: {sorted(layers)})")
    if proj_clip is not None and not any(layers[n].proj_size for n in lstms):
        raise ValueError(f"{label}: proj_clip clips the projection of an LSTMCell(num_proj=...), "
                         "but no cell here has a projection (projection/kernel); without one "
                         "it means nothing")
    if scope is not None and scope in layers:
        return layers[scope]
    return single_or_dict(layers, None, label)


def _assemble(variables, layer_name, cells, forget_bias, label, dtype, cell_clip=None,
              proj_clip=None):
    ks = sorted({k for k, _ in cells})
    dirs = sorted({d for _, d in cells})
    if ks != list(range(len(ks))):
        raise ValueError(f"{label}: {layer_name} has cells for layers {ks}; some are missing")
    bidirectional = dirs == ["bw", "fw"]
    separate = any(s for _, _, s in cells.values())
    reverse = dirs == ["bw"]
    kinds = {cells[key][1] for key in cells}
    if len(kinds) != 1:
        raise ValueError(f"{label}: {layer_name} mixes cell types {sorted(kinds)}")
    sd, info = {}, set()
    for (k, d) in sorted(cells):
        root, cell, _ = cells[(k, d)]
        direction = "backward" if bidirectional and d == "bw" else "forward"
        out = _cell_weights(variables, root, cell, forget_bias, label, sd,
                            f"layer{k}.{direction}")
        if k == 0:
            info.add(out)
        else:
            info.add((out[0], None) + out[2:])
    first = [i for i in info if i[1] is not None]
    kind, input_size, H, use_bias, reset_after, proj_size, peepholes = first[0]
    if len({(i[0],) + i[2:] for i in info}) != 1 or len(first) != 1:
        raise ValueError(f"{label}: the cells of {layer_name} differ in type, size, peepholes "
                         "or projection")
    variant = {}
    if kind == "lstm":
        if peepholes:
            variant["peepholes"] = True
        if proj_size:
            variant["proj_size"] = proj_size
            if proj_clip is not None:
                variant["proj_clip"] = proj_clip
        if cell_clip is not None:
            variant["cell_clip"] = cell_clip
    return build(kind, input_size, H, sd, dtype=dtype, num_layers=len(ks),
                 bidirectional=bidirectional, reverse=reverse, use_bias=use_bias,
                 reset_after=reset_after, name=layer_name, **variant)
