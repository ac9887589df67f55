"""Helpers shared by the format modules: building a layer from gate blocks, and the reverse.

Every foreign format stores a layer direction as gate blocks of one of two shapes:
* "rows" (PyTorch, cuDNN, ONNX): W (G*H, I), R (G*H, H), one block of H rows per gate, in the
  format's gate order; two bias vectors b_W, b_R (G*H,).
* "columns" (Keras, TF1): kernel (I, G*H), recurrent (H, G*H), one block of H columns per gate.
The format modules only say which order their blocks come in; the slicing lives here.
"""
import numpy as np

DIRECTIONS = ("forward", "backward")


def require(module, extra):
    """Import an optional dependency, or say which extra installs it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"this needs the optional dependency {module!r}: "
                          f"pip install fastrnn[{extra}]") from exc


def as_array(a, what):
    """A real-valued numpy array, whatever array-like came in (tensors via .numpy())."""
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    elif hasattr(a, "numpy") and not isinstance(a, np.ndarray):
        a = a.numpy()
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{what} must hold real numbers, got dtype {a.dtype}")
    return a


def file_dtype(arrays):
    """Loaders build float64 layers from float64 weights and float32 layers otherwise."""
    return np.float64 if any(np.asarray(a).dtype == np.float64 for a in arrays) else np.float32


def expect_shape(a, shape, what):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what} has shape {tuple(a.shape)}, expected {tuple(shape)}")
    return a


def split_rows(cell, order, W, R, b_w, b_r, H, prefix, sd, proj_size=0):
    """Row-block layout (W @ x) -> canonical keys under `prefix` ("layer0.forward"). With a
    projection the recurrent weight has proj_size columns."""
    G = len(order)
    W = np.asarray(W)
    R = np.asarray(R)
    if W.ndim != 2 or W.shape[0] != G * H:
        raise ValueError(f"{prefix}: input weight has shape {W.shape}, expected ({G * H}, "
                         f"input_size) for a {cell.upper()} with {G} gates of hidden size {H}")
    expect_shape(R, (G * H, proj_size or H), f"{prefix}: recurrent weight")
    # The row-block layout is the column-block one transposed.
    split_columns(cell, order, W.T, R.T, b_w, b_r, H, prefix, sd, proj_size)


def split_columns(cell, order, K, Rk, b_w, b_r, H, prefix, sd, proj_size=0):
    """Column-block layout (x @ kernel) -> canonical keys under `prefix`; with a projection
    the recurrent kernel has proj_size rows."""
    G = len(order)
    K = np.asarray(K)
    Rk = np.asarray(Rk)
    if K.ndim != 2 or K.shape[1] != G * H:
        raise ValueError(f"{prefix}: kernel has shape {K.shape}, expected (input_size, {G * H}) "
                         f"for a {cell.upper()} with {G} gates of hidden size {H}")
    expect_shape(Rk, (proj_size or H, G * H), f"{prefix}: recurrent kernel")
    for what, b in (("bias", b_w), ("recurrent bias", b_r)):
        if b is not None:
            expect_shape(np.asarray(b), (G * H,), f"{prefix}: {what}")
    for k, gate in enumerate(order):
        cols = slice(k * H, (k + 1) * H)
        sd[f"{prefix}.{gate}.kernel"] = K[:, cols]
        sd[f"{prefix}.{gate}.recurrent"] = Rk[:, cols]
        _put_biases(cell, sd, f"{prefix}.{gate}", b_w, b_r, cols)


def _put_biases(cell, sd, key, b_w, b_r, sl):
    if b_w is None and b_r is None:
        return
    H = sl.stop - sl.start
    dt = np.result_type(*[np.asarray(b) for b in (b_w, b_r) if b is not None])
    bw = np.zeros(H, dt) if b_w is None else np.asarray(b_w)[sl]
    br = np.zeros(H, dt) if b_r is None else np.asarray(b_r)[sl]
    if cell == "lstm":  # an LSTM's two framework biases only ever act as their sum
        # summed in float64: the layer rounds once to its own dtype
        sd[f"{key}.bias"] = (np.asarray(bw, np.float64) + br).astype(dt)
    else:
        sd[f"{key}.bias"] = bw
        sd[f"{key}.recurrent_bias"] = br


def join_rows(layer, order, layer_index, direction):
    """Canonical weights -> (W (G*H, I), R (G*H, H), b_W, b_R); biases None without use_bias.

    LSTM biases go to b_W with b_R zero (only the sum matters)."""
    gates = [layer.gate(g, layer_index, direction) for g in order]
    W = np.concatenate([g.kernel.T for g in gates], axis=0)
    R = np.concatenate([g.recurrent.T for g in gates], axis=0)
    if not layer.use_bias:
        return W, R, None, None
    b_w = np.concatenate([g.bias for g in gates])
    b_r = np.zeros_like(b_w) if layer._cell == "lstm" else \
        np.concatenate([g.recurrent_bias for g in gates])
    return W, R, b_w, b_r


def build(cell, input_size, hidden_size, sd, *, dtype=None, **config):
    """A fastrnn layer from a canonical state_dict plus constructor keywords."""
    from ..layers import GRU, LSTM
    if dtype is None:
        dtype = file_dtype(sd.values())
    cls = LSTM if cell == "lstm" else GRU
    if cell == "lstm":
        config.pop("reset_after", None)
    config.setdefault("use_bias", any(k.endswith(".bias") for k in sd))
    # init="torch" is the cheap one (uniform draws, no QR); every weight is overwritten below
    layer = cls(int(input_size), int(hidden_size), dtype=dtype, init="torch", **config)
    layer.load_state_dict(sd)
    return layer


def build_int8(label, cell, input_size, hidden_size, arrays, **config):
    """An int8 layer (`layer.quantize("int8")`) from the arrays of its state_dict: int8
    "kernel" / "recurrent" with float32 "kernel_scale" / "recurrent_scale" per gate, float
    biases (and peepholes). A float32 layer is built from the float parts and the dequantized
    weights, then runs on the file's own int8 weights and scales (not re-quantized).
    ValueError, prefixed with `label`, for a malformed set."""
    floats, quantized = {}, {}
    for key, value in arrays.items():
        part = key.rsplit(".", 1)[-1]
        (quantized if part in ("kernel", "recurrent", "kernel_scale", "recurrent_scale")
         else floats)[key] = value
    for key, value in quantized.items():
        if key.endswith(".kernel") or key.endswith(".recurrent"):
            scale = quantized.get(key + "_scale")
            if value.dtype != np.int8 or scale is None or scale.shape != value.shape[1:]:
                raise ValueError(f"{label}: {key!r} must be int8 with a {key}_scale per column")
            floats[key] = value.astype(np.float32) * scale.astype(np.float32)
    layer = build(cell, input_size, hidden_size, floats, dtype="float32", **config)
    try:
        return layer._int8_copy(layer._int8_parts(quantized))
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from exc


def describe(layer, file_gate_order=None):
    """One line per layer for `fastrnn inspect`: cell, variant, sizes, gate order, masking."""
    direction = "bidirectional" if layer.bidirectional else \
        "reverse" if layer.reverse else "forward"
    variant = [direction]
    if layer._cell == "gru":
        variant.append(f"reset_after={layer.reset_after}")
    if not layer.use_bias:
        variant.append("no bias")
    for key, value in layer.variant_config().items():  # cell variants (docs/variants.md)
        if key == "activations":
            value = "[" + ", ".join(
                name if alpha is None and beta is None else
                f"{name}({', '.join(str(v) for v in (alpha, beta) if v is not None)})"
                for name, alpha, beta in value) + "]"
        variant.append(key if value is True else f"{key}={value}")
    return (f"{layer._cell.upper()} input_size={layer.input_size} hidden_size={layer.hidden_size} "
            f"num_layers={layer.num_layers} {' '.join(variant)} "
            f"gates=({', '.join(layer._gates)}) masked_output={layer.masked_output} "
            f"dtype={layer.dtype.name}"
            + (f" file_gate_order=({', '.join(file_gate_order)})" if file_gate_order else ""))


def single_or_dict(layers, name, what):
    """A file with one recurrent layer gives the layer; several give a dict name -> layer, or
    the one named `name`."""
    if not layers:
        raise ValueError(f"no LSTM or GRU layer found in {what}")
    if name is not None:
        if name not in layers:
            raise KeyError(f"no recurrent layer named {name!r} in {what}; found {list(layers)}")
        return layers[name]
    if len(layers) == 1:
        return next(iter(layers.values()))
    return layers


def read_source(path_or_bytes):
    """(bytes, label) of a path or bytes-like object."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), "<bytes>"
    import os
    path = os.fspath(path_or_bytes)
    with open(path, "rb") as f:
        return f.read(), path
